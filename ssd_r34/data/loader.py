"""A training data loader whose progress survives a restart (docs/data.md, "Resumable
training loader"): a seed per stream position, so a sample's augmentation depends neither on
what ran before it nor on the number of workers."""
import bisect
import itertools
import random
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from detectron2.data.build import print_instances_class_histogram
from detectron2.data.common import DatasetFromList
from detectron2.data.detection_utils import check_metadata_consistency
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm

from .validation import (DatasetError, SkipUnreadableImages, UnreadableImageError,
                         check_dataset_dicts, check_dataset_metadata)

__all__ = ["ResumableTrainingSampler", "SeededMapDataset", "SkipUnreadableImages",
           "build_resumable_train_loader", "find_resumable_sampler", "load_train_dicts"]


class ResumableTrainingSampler(TrainingSampler):
    """``TrainingSampler``'s stream (same seed, order and sharding over ranks) after its first
    ``start`` entries (all ranks together), as ``(sample_seed, index)`` pairs."""

    def __init__(self, size: int, seed: int, start: int = 0):
        super().__init__(int(size), seed=int(seed))
        self.set_progress(seed, start)

    @property
    def seed(self) -> int:
        return self._seed

    def set_progress(self, seed: int, start: int) -> None:
        """Continue the stream seeded ``seed`` after ``start`` entries (new iterators)."""
        self._seed, self._start = int(seed), int(start)

    def _infinite_indices(self):
        stream = itertools.islice(super()._infinite_indices(), self._start, None)
        for position, index in enumerate(stream, self._start):
            seed = np.random.SeedSequence([self._seed & 0xFFFFFFFF, position])
            yield int(seed.generate_state(1)[0]), index


@contextmanager
def _seeded_rngs(seed: int):
    # Seed random, numpy and torch's CPU generator; restore their states after.
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed)
        torch.default_generator.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class SeededMapDataset(Dataset):
    """``dataset[(sample_seed, index)]`` = ``mapper(dicts[index])`` with the random generators
    seeded from ``sample_seed``. Where the mapper returns None (no box left after the crop)
    or, with ``skip_unreadable``, the image is unreadable, another index is drawn from the
    same generator (as Detectron2's MapDataset does). A DatasetError is re-raised naming
    the record's data set (``spans``: (name, number of records), in order)."""

    def __init__(self, dicts, mapper, max_attempts: int = 100,
                 spans: Optional[Sequence[Tuple[str, int]]] = None,
                 skip_unreadable: bool = False):
        self._dataset = DatasetFromList(dicts, copy=False, serialize=True)
        self._mapper, self._max_attempts = mapper, max_attempts
        self._names = [name for name, _ in spans or []]
        self._ends = list(itertools.accumulate(n for _, n in spans or []))
        self._skip_unreadable, self._skipped = skip_unreadable, SkipUnreadableImages()

    def __len__(self):
        return len(self._dataset)

    def __getitem__(self, key):
        seed, index = key
        with _seeded_rngs(seed):
            for _ in range(self._max_attempts):
                try:
                    out = self._mapper(self._dataset[index])
                except DatasetError as e:
                    span = bisect.bisect_right(self._ends, index)
                    e.in_dataset(self._names[span] if span < len(self._names) else None)
                    if not (self._skip_unreadable and isinstance(e, UnreadableImageError)):
                        raise
                    self._skipped.skip(e)
                    out = None
                if out is not None:
                    return out
                index = int(np.random.randint(len(self._dataset)))
        raise RuntimeError(
            f"The mapper returned None {self._max_attempts} times in a row (images the "
            "augmentation left without boxes, or unreadable images skipped); check the data "
            f"set ({', '.join(self._names) or 'unnamed'}).")


def load_train_dicts(cfg) -> Tuple[List[Dict], List[Tuple[str, int]]]:
    """The records of DATASETS.TRAIN, each data set checked, and their class histogram
    logged (Detectron2's ``get_detection_dataset_dicts`` would assert on an out-of-range id
    before a check could name the data set).

    Returns:
        (records, [(data set name, number of its records)]).
    """
    names = [cfg.DATASETS.TRAIN] if isinstance(cfg.DATASETS.TRAIN, str) \
        else list(cfg.DATASETS.TRAIN)
    if not names:
        raise ValueError("DATASETS.TRAIN is empty: name a registered data set, e.g. "
                         "DATASETS.TRAIN \"('shapes_train',)\".")
    num_classes = cfg.MODEL.SSD.NUM_CLASSES
    dicts, spans = [], []
    for name in names:
        check_dataset_metadata(name, num_classes)
        records = DatasetCatalog.get(name)
        if len(records) == 0:
            raise DatasetError("it has no records.", dataset=name)
        records = check_dataset_dicts(list(records), name, num_classes,
                                      filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
        if not records:
            raise DatasetError("no image with a valid box is left (see the warning above).",
                               dataset=name)
        dicts += records
        spans.append((name, len(records)))
    if len(names) > 1:
        check_metadata_consistency("thing_classes", names)
    classes = MetadataCatalog.get(names[0]).get("thing_classes", None)
    if classes is not None and "annotations" in dicts[0]:
        print_instances_class_histogram(dicts, classes)
    return dicts, spans


def build_resumable_train_loader(cfg, mapper):
    """Detectron2's training loader over a :class:`ResumableTrainingSampler` (seeded by SEED,
    or a seed shared by all ranks when SEED < 0) and a :class:`SeededMapDataset` of the
    checked records; batches of SOLVER.IMS_PER_BATCH / world size, in stream order."""
    dicts, spans = load_train_dicts(cfg)
    seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    return build_detection_train_loader(
        dataset=SeededMapDataset(dicts, mapper, spans=spans,
                                 skip_unreadable=cfg.INPUT.SSD.SKIP_UNREADABLE_IMAGES),
        mapper=None, sampler=ResumableTrainingSampler(len(dicts), seed=seed),
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH, aspect_ratio_grouping=False,
        num_workers=cfg.DATALOADER.NUM_WORKERS)


def find_resumable_sampler(data_loader):
    """The ResumableTrainingSampler behind a loader from build_resumable_train_loader, or None."""
    sampler = getattr(getattr(data_loader, "dataset", None), "sampler", None)
    return sampler if isinstance(sampler, ResumableTrainingSampler) else None
