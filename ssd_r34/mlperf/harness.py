"""The MLPerf inference harness on LoadGen (``mlcommons-loadgen``): a query sample library
over a registered Detectron2 data set and a system under test over an inference backend.

* :class:`DatasetQSL`: sample ``i`` is image ``i`` of the MLPerf accuracy script's list (the
  data set's order; see :mod:`ssd_r34.data.datasets.coco_mlperf`). LoadGen's
  ``load_samples`` pre-processes the images it names into memory (the evaluation mapper:
  INPUT.RESIZE_IMPL), ``unload_samples`` frees them, so that timed queries read memory only,
  as MLPerf's harness does.
* :class:`SUT`: ``issue_queries`` puts the samples on a queue in batches (Offline: up to
  ``batch_size`` samples per batch; MultiStream: a query's samples; SingleStream and Server:
  one per query, or what one call brings), worker threads run the backend and answer each
  sample with its accuracy records (:mod:`ssd_r34.mlperf.accuracy`), in every mode (LoadGen
  keeps them in accuracy mode only).
* :func:`run_loadgen` builds LoadGen's settings (``user.conf`` if given, then the command
  line's overrides), runs the test and writes LoadGen's ``mlperf_log_summary.txt``,
  ``mlperf_log_detail.txt`` and ``mlperf_log_accuracy.json`` into the output folder.
"""
import logging
import os
import queue
import threading
import time
from typing import Dict, List, Optional

import numpy as np

from .accuracy import encode_records, label_map_for, load_coco

logger = logging.getLogger(__name__)

__all__ = ["DatasetQSL", "SUT", "SCENARIOS", "MODES", "build_settings", "run_loadgen",
           "parse_summary", "MLPERF_MODEL_NAME"]

SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")
MODES = ("performance", "accuracy")
# The model's name in LoadGen's mlperf.conf / user.conf lines ("ssd-resnet34.Offline.x = y").
MLPERF_MODEL_NAME = "ssd-resnet34"


class DatasetQSL:
    """Query sample library over a registered data set.

    Args:
        cfg: config (INPUT.* for the pre-processing).
        dataset_name: a registered data set with a COCO ``json_file`` in its metadata.
        count: use only the first ``count`` images (None: all).
        performance_sample_count: samples LoadGen keeps loaded in performance mode (default:
            all, at most 64 as MLPerf's ssd-resnet34).
    """

    def __init__(self, cfg, dataset_name: str, count: Optional[int] = None,
                 performance_sample_count: Optional[int] = None):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        from ..data import SSDDatasetMapper, ensure_dataset, mlperf_image_ids

        ensure_dataset(dataset_name)
        meta = MetadataCatalog.get(dataset_name)
        json_file = meta.get("json_file", None)
        if not json_file:
            raise ValueError(f"The data set {dataset_name!r} has no json_file in its metadata: "
                             "the MLPerf harness needs a COCO-format data set.")
        dicts = DatasetCatalog.get(dataset_name)
        self.coco = load_coco(json_file)
        self.json_file = json_file
        self.remove_empty = bool(meta.get("mlperf_remove_empty_images", False))
        # Sample i must be image i of the accuracy script's list.
        order = mlperf_image_ids(self.coco, self.remove_empty)
        by_id = {d["image_id"]: d for d in dicts}
        missing = [i for i in order if i not in by_id]
        if missing:
            raise ValueError(
                f"{dataset_name}: {len(missing)} image(s) of {json_file} are not in the data "
                f"set (e.g. id {missing[0]}): MLPerf's accuracy script indexes the annotation "
                "file's images, so the data set must hold them all.")
        self.dicts = [by_id[i] for i in order][:count]
        self.label_map = label_map_for(meta, self.coco)
        self.mapper = SSDDatasetMapper(cfg, is_train=False)
        self.count = len(self.dicts)
        if self.count == 0:
            raise ValueError(f"{dataset_name} holds no image.")
        self.performance_sample_count = min(self.count, performance_sample_count or 64)
        self.samples: Dict[int, Dict] = {}
        self.sizes = [(int(d["height"]), int(d["width"])) for d in self.dicts]

    def load_samples(self, indices: List[int]) -> None:
        for i in indices:
            if i not in self.samples:
                x = self.mapper(self.dicts[i])
                x.pop("annotations", None)
                self.samples[i] = x

    def unload_samples(self, indices: List[int]) -> None:
        for i in indices:
            self.samples.pop(i, None)

    def get(self, index: int) -> Dict:
        try:
            return self.samples[index]
        except KeyError:
            raise RuntimeError(f"Sample {index} was queried but not loaded (LoadGen calls "
                               "load_samples first).") from None

    def records(self, index: int, detections) -> bytes:
        boxes, scores, classes = detections
        keep = classes < len(self.label_map)  # a model with more classes than the data set
        return encode_records(index, boxes[keep], scores[keep], self.label_map[classes[keep]])

    def construct(self):
        import mlperf_loadgen as lg

        return lg.ConstructQSL(self.count, self.performance_sample_count, self.load_samples,
                               self.unload_samples)


class SUT:
    """System under test: a queue of batches, ``threads`` workers running ``backend``.

    Args:
        backend: see :mod:`ssd_r34.mlperf.backends`.
        qsl: the :class:`DatasetQSL`.
        scenario: one of SCENARIOS (decides how issued samples are batched).
        batch_size: Offline: samples per backend call.
        threads: worker threads (1 suits a CPU whose cores the backend already uses).
    """

    def __init__(self, backend, qsl: DatasetQSL, scenario: str, batch_size: int = 1,
                 threads: int = 1):
        self.backend = backend
        self.qsl = qsl
        self.scenario = scenario
        self.batch_size = max(1, int(batch_size))
        self.queue: "queue.Queue" = queue.Queue()
        self.issued = self.answered = 0
        # LoadGen's response ids are unique among outstanding samples (it may reuse one
        # after its answer): a sample is lost if still pending at the end, answered twice
        # if answered while not pending.
        self.pending: Dict[int, int] = {}
        self.answered_twice: List[int] = []
        self.issued_twice = 0
        self.errors: List[BaseException] = []
        self._lock = threading.Lock()
        self.workers = [threading.Thread(target=self._work, daemon=True, name=f"sut-{i}")
                        for i in range(max(1, int(threads)))]
        for w in self.workers:
            w.start()

    def issue_queries(self, query_samples) -> None:
        samples = list(query_samples)
        with self._lock:
            self.issued += len(samples)
            for q in samples:
                if q.id in self.pending:
                    self.issued_twice += 1
                self.pending[q.id] = q.index
        if self.scenario == "Offline":
            step = self.batch_size
        elif self.scenario == "MultiStream":
            step = len(samples)
        else:
            step = max(1, len(samples))
        for i in range(0, len(samples), step):
            self.queue.put(samples[i:i + step])

    def flush_queries(self) -> None:
        pass

    def _work(self) -> None:
        import mlperf_loadgen as lg

        while True:
            batch = self.queue.get()
            if batch is None:
                return
            try:
                dets = self.backend.predict([self.qsl.get(s.index) for s in batch])
                payloads = [np.frombuffer(self.qsl.records(s.index, d), dtype=np.uint8)
                            for s, d in zip(batch, dets)]
            except BaseException as e:  # answer anyway: LoadGen would wait forever
                logger.exception("The backend failed on a batch; answering it empty.")
                self.errors.append(e)
                payloads = [np.zeros(0, dtype=np.uint8) for _ in batch]
            responses = []
            for s, p in zip(batch, payloads):
                ptr = p.ctypes.data if p.size else 0
                responses.append(lg.QuerySampleResponse(s.id, ptr, p.size))
            with self._lock:
                self.answered += len(batch)
                for s in batch:
                    if self.pending.pop(s.id, None) is None:
                        self.answered_twice.append(s.id)
            lg.QuerySamplesComplete(responses)  # copies the data; payloads may go after

    def stop(self) -> None:
        for _ in self.workers:
            self.queue.put(None)
        for w in self.workers:
            w.join()

    def construct(self):
        import mlperf_loadgen as lg

        return lg.ConstructSUT(self.issue_queries, self.flush_queries)


def build_settings(scenario: str, mode: str, user_conf: Optional[str] = None,
                   overrides: Optional[Dict] = None):
    """LoadGen ``TestSettings``: LoadGen's defaults (its built-in mlperf.conf), then
    ``user_conf`` (lines ``ssd-resnet34.<Scenario>.<key> = value`` or ``*.<Scenario>...``),
    then ``overrides`` (TestSettings attribute -> value; durations in ms, latencies in ns)."""
    import mlperf_loadgen as lg

    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    s = lg.TestSettings()
    if user_conf:
        if not os.path.exists(user_conf):
            raise FileNotFoundError(f"No user.conf {user_conf}")
        if s.FromConfig(user_conf, MLPERF_MODEL_NAME, scenario) != 0:
            raise ValueError(f"LoadGen could not read {user_conf} (see its log above).")
    else:
        s.FromConfig("", MLPERF_MODEL_NAME, scenario, 0)  # mlperf.conf only
    s.scenario = getattr(lg.TestScenario, scenario)
    s.mode = lg.TestMode.AccuracyOnly if mode == "accuracy" else lg.TestMode.PerformanceOnly
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if not hasattr(s, key):
            raise ValueError(f"LoadGen's TestSettings has no {key!r}")
        setattr(s, key, value)
    return s


def run_loadgen(backend, qsl: DatasetQSL, scenario: str, mode: str, output_dir: str,
                settings=None, batch_size: int = 1, threads: int = 1,
                print_summary: bool = True) -> Dict:
    """Run one LoadGen test and write its logs into ``output_dir``.

    Returns:
        dict: ``summary`` (:func:`parse_summary` of mlperf_log_summary.txt), ``issued`` and
        ``answered`` sample counts, ``lost`` (issued, never answered), ``answered_twice``
        (response ids answered while not outstanding), ``issued_twice`` (ids issued while
        outstanding), ``errors`` (backend failures), ``seconds``.
    """
    import mlperf_loadgen as lg

    os.makedirs(output_dir, exist_ok=True)
    settings = settings or build_settings(scenario, mode)
    log = lg.LogSettings()
    log.log_output.outdir = os.path.abspath(output_dir)
    log.log_output.copy_summary_to_stdout = bool(print_summary)
    log.enable_trace = False
    sut = SUT(backend, qsl, scenario, batch_size=batch_size, threads=threads)
    sut_handle, qsl_handle = sut.construct(), qsl.construct()
    t = time.perf_counter()
    try:
        lg.StartTestWithLogSettings(sut_handle, qsl_handle, settings, log)
    finally:
        seconds = time.perf_counter() - t
        sut.stop()
        lg.DestroyQSL(qsl_handle)
        lg.DestroySUT(sut_handle)
    summary_path = os.path.join(output_dir, "mlperf_log_summary.txt")
    summary = parse_summary(summary_path) if os.path.exists(summary_path) else {}
    return {"summary": summary, "issued": sut.issued, "answered": sut.answered,
            "lost": len(sut.pending), "answered_twice": list(sut.answered_twice),
            "issued_twice": sut.issued_twice, "errors": len(sut.errors), "seconds": seconds}


def parse_summary(path: str) -> Dict[str, str]:
    """``key : value`` lines of mlperf_log_summary.txt (e.g. "Result is": "VALID",
    "Completed samples per second", "99.00 percentile latency (ns)")."""
    out = {}
    with open(path) as f:
        for line in f:
            if " : " in line:
                k, v = line.split(" : ", 1)
                out.setdefault(k.strip(), v.strip())
    return out
