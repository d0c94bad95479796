"""Checks of the data where it is read: class ids, boxes, images. Every message names the
data set and the file or annotation (docs/validation.md lists them all)."""
import logging
import math
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.structures import BoxMode
from detectron2.utils.file_io import PathManager

__all__ = ["DatasetError", "UnreadableImageError", "box_problem", "check_annotations",
           "check_dataset_metadata", "check_dataset_dicts", "read_image", "SkipUnreadableImages"]

logger = logging.getLogger(__name__)

MAX_LISTED = 5  # annotations / files named in a message


def _first(items: Sequence[str], sep: str = "; ") -> str:  # the first MAX_LISTED, then "..."
    return sep.join(items[:MAX_LISTED]) + (" ..." if len(items) > MAX_LISTED else "")


class DatasetError(ValueError):
    """Bad data: the message names the data set (when known), the file or annotation, and
    what to change."""

    def __init__(self, message: str, dataset: Optional[str] = None):
        super().__init__(message)
        self.message, self.dataset = message, dataset

    def __str__(self):
        return f"data set '{self.dataset}': {self.message}" if self.dataset else self.message

    def in_dataset(self, dataset: Optional[str]) -> "DatasetError":  # unless one is named
        self.dataset = self.dataset or dataset
        return self


class UnreadableImageError(DatasetError):
    """An image file that is missing, empty, truncated or not an image."""

    def __init__(self, message: str, file_name: str, dataset: Optional[str] = None):
        super().__init__(message, dataset)
        self.file_name = file_name


def box_problem(bbox: Sequence[float], bbox_mode, width: Optional[float] = None,
                height: Optional[float] = None) -> Optional[str]:
    """Why an annotated box (in ``bbox_mode``, in an image of ``width`` x ``height`` if
    known) cannot be trained on: "non-finite coordinates", "width <= 0", "height <= 0",
    "entirely outside the image", or None. Nothing is repaired."""
    try:
        values = [float(v) for v in bbox]
    except (TypeError, ValueError):
        return f"not a box ({bbox!r})"
    if len(values) not in (4, 5):
        return f"not a box ({len(values)} numbers)"
    if not all(math.isfinite(v) for v in values):
        return "non-finite coordinates"
    x0, y0, x1, y1 = BoxMode.convert(values, bbox_mode, BoxMode.XYXY_ABS)
    # as annotated: XYWH's own width and height (x0 + w - x0 may round to 0)
    w, h = values[2:4] if BoxMode(bbox_mode) == BoxMode.XYWH_ABS else (x1 - x0, y1 - y0)
    if w <= 0:
        return "width <= 0"
    if h <= 0:
        return "height <= 0"
    if width is not None and height is not None and (
            x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height):
        return "entirely outside the image"
    return None


def check_annotations(record: Dict, num_classes: Optional[int], width=None, height=None):
    """Sort a record's annotations into ``(valid, bad class ids, invalid boxes)``, the last
    two as descriptions naming the file and annotation. Class ids must be in
    ``[0, num_classes)`` (None: not checked); boxes pass :func:`box_problem`."""
    valid, bad_ids, dropped = [], [], []
    for j, a in enumerate(record.get("annotations") or []):
        which = f"annotation id {a['id']}" if "id" in a else f"annotation #{j}"
        where, c = f"{record.get('file_name', '?')}, {which}", a.get("category_id")
        if num_classes is not None and (
                not isinstance(c, (int, np.integer)) or not 0 <= c < num_classes):
            bad_ids.append(f"{where}: category_id {c!r} is outside [0, {num_classes})")
        elif (why := box_problem(a["bbox"], a["bbox_mode"], width, height)) is not None:
            dropped.append(f"{where} ({why}: bbox {list(a['bbox'])})")
        else:
            valid.append(a)
    return valid, bad_ids, dropped


def check_dataset_metadata(name: str, num_classes: int) -> None:
    """Refuse (DatasetError) a data set whose ``thing_classes`` count differs from
    MODEL.SSD.NUM_CLASSES, naming its classes and the value to set."""
    classes = MetadataCatalog.get(name).get("thing_classes", None)
    if classes is not None and len(classes) != num_classes:
        raise DatasetError(
            f"it has {len(classes)} classes (thing_classes: {_first(list(map(str, classes)), ', ')}"
            f") but MODEL.SSD.NUM_CLASSES is {num_classes}. Set MODEL.SSD.NUM_CLASSES "
            f"{len(classes)}.", dataset=name)


def check_dataset_dicts(dicts: List[Dict], name: str, num_classes: int,
                        filter_empty: bool = False) -> List[Dict]:
    """The records to train on: annotations with an invalid box dropped from a copy of their
    record, reported in one warning; with ``filter_empty`` (DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    so are records left without a non-crowd annotation.

    Raises:
        DatasetError: class ids outside ``[0, num_classes)`` (crowd included).
    """
    bad_ids, dropped, out, emptied = [], [], [], 0
    for record in dicts:
        annos = record.get("annotations")
        keep, bad, invalid = check_annotations(record, num_classes, record.get("width"),
                                               record.get("height"))
        bad_ids += bad
        dropped += invalid
        if annos and len(keep) != len(annos):
            record = dict(record, annotations=keep)
        if annos and filter_empty and not any(a.get("iscrowd", 0) == 0 for a in keep):
            emptied += 1
            continue
        out.append(record)
    if bad_ids:
        raise DatasetError(
            f"{len(bad_ids)} annotation(s) have a class id outside [0, {num_classes}) "
            f"(MODEL.SSD.NUM_CLASSES {num_classes}): {_first(bad_ids)}. Class ids are "
            "contiguous, 0 to NUM_CLASSES - 1 (the background is implicit): set "
            "MODEL.SSD.NUM_CLASSES to the data set's class count, or fix the ids (a COCO json "
            "is mapped to contiguous ids by Detectron2's load_coco_json).", dataset=name)
    if dropped:
        left = f". {emptied} image(s) left without a box are not used" if emptied else ""
        logger.warning(f"Data set '{name}': dropped {len(dropped)} annotation(s) with an "
                       f"invalid box (not repaired): {_first(dropped)}{left}.")
    return out


def _to_8bit(image: Image.Image) -> Image.Image:
    # 16/32-bit single-channel images -> 8-bit "L", 16-bit values by value / 257 (PIL's
    # convert would clip at 255); "I" / "F" images whose values fit in 0..255 are kept.
    if not (image.mode.startswith("I;16") or image.mode in ("I", "F")):
        return image
    a = np.nan_to_num(np.asarray(image, dtype=np.float64))
    if image.mode.startswith("I;16") or a.max(initial=0) > 255:
        a = np.clip(a, 0, 65535) / 257.0
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))  # mode "L"


def read_image(file_name: str, format: str = "RGB") -> np.ndarray:
    """Detectron2's ``read_image`` with 16-bit images scaled to 8 bits and every failure as
    :class:`UnreadableImageError` naming the file. Returns (H, W, C) uint8 (C = 1 for "L")."""
    try:
        with PathManager.open(file_name, "rb") as f:
            image = utils._apply_exif_orientation(Image.open(f))
            image.load()
            return utils.convert_PIL_to_numpy(_to_8bit(image), format)
    except Exception as e:  # noqa: BLE001 - any failure to decode is an unreadable file
        if isinstance(e, FileNotFoundError) or not os.path.exists(file_name):
            what = "the file does not exist"
        elif os.path.isfile(file_name) and os.path.getsize(file_name) == 0:
            what = "the file is empty (0 bytes)"
        elif "truncated" in str(e).lower():
            what = f"the image is truncated ({e})"
        elif isinstance(e, Image.UnidentifiedImageError):
            what = "the file is not an image PIL can read"
        else:
            what = f"{type(e).__name__}: {e}"
        raise UnreadableImageError(
            f"cannot read image {file_name}: {what}. Fix or remove the file (and its "
            "annotations), or set INPUT.SSD.SKIP_UNREADABLE_IMAGES True to skip such images "
            "in training.", file_name) from e


class SkipUnreadableImages:
    """A mapper for Detectron2's own loaders that gives None for an unreadable image (the
    loader draws another); ``skip`` counts the skipped images (INPUT.SSD.SKIP_UNREADABLE_IMAGES)
    and warns: the first MAX_LISTED by name, then at 10, 100, 1000 ... (per worker process)."""

    def __init__(self, mapper=None):
        self._mapper, self.count, self.files = mapper, 0, []

    def __call__(self, dataset_dict):
        try:
            return self._mapper(dataset_dict)
        except UnreadableImageError as e:
            self.skip(e)
            return None

    def skip(self, error: UnreadableImageError) -> None:
        self.count += 1
        if len(self.files) < MAX_LISTED:
            self.files.append(error.file_name)
            logger.warning(f"Skipped an unreadable image ({self.count} so far in this "
                           f"process, INPUT.SSD.SKIP_UNREADABLE_IMAGES): {error}")
        elif math.log10(self.count).is_integer():
            logger.warning(f"Skipped {self.count} unreadable images so far in this process; "
                           f"the first: {', '.join(self.files)}.")
