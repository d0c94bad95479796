"""Your own data sets, named in the config: COCO json files (DATASETS.COCO) and Pascal VOC
folders (DATASETS.VOC), registered with Detectron2's ``register_coco_instances`` /
``register_pascal_voc`` in every process that sets up from the config (docs/data.md)."""
import json
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances, register_pascal_voc
from detectron2.data.datasets.pascal_voc import CLASS_NAMES as VOC_CLASSES

from .shapes import ensure_shapes

__all__ = ["register_dataset_files", "dataset_metadata"]

_FORMS = {"DATASETS.COCO": "(NAME, JSON_FILE, IMAGE_ROOT)",
          "DATASETS.VOC": "(NAME, DIRNAME, SPLIT) or (NAME, DIRNAME, SPLIT, 'class_a,class_b')"}


def _check_entry(key, entry, sizes):
    if isinstance(entry, str) or len(entry) not in sizes or \
            not all(isinstance(x, str) and x for x in entry):
        raise ValueError(f"{key}: each entry is {_FORMS[key]} of non-empty strings, got "
                         f"{entry!r}. Example: {key} \"(('mine_train', 'train.json', "
                         "'images/'),)\"")


def _already(name, **expected):
    # True when name is registered with these metadata values; raises when as something else.
    if name not in DatasetCatalog.list():
        return False
    have = {k: MetadataCatalog.get(name).get(k, None) for k in expected}
    if have != expected:
        raise ValueError(f"Data set {name!r} is already registered as something else ({have}), "
                         f"not as {expected}: give your data set another name.")
    return True


def register_dataset_files(cfg):
    """Register the data sets of DATASETS.COCO and DATASETS.VOC (idempotent; a name already
    registered with other files is an error). Returns the names of the entries."""
    names = []
    for entry in cfg.DATASETS.COCO:
        _check_entry("DATASETS.COCO", entry, (3,))
        name, json_file, image_root = entry[0], *map(os.path.abspath, entry[1:])
        for path, what, exists in ((json_file, "json file", os.path.isfile),
                                   (image_root, "image folder", os.path.isdir)):
            if not exists(path):
                raise FileNotFoundError(f"DATASETS.COCO {name!r}: the {what} {path} does not "
                                        "exist.")
        if not _already(name, json_file=json_file, image_root=image_root):
            register_coco_instances(name, {}, json_file, image_root)
        names.append(name)
    for entry in cfg.DATASETS.VOC:
        _check_entry("DATASETS.VOC", entry, (3, 4))
        name, dirname, split = entry[0], os.path.abspath(entry[1]), entry[2]
        classes = [c.strip() for c in entry[3].split(",")] if len(entry) == 4 else \
            list(VOC_CLASSES)
        split_file = os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")
        if not os.path.isfile(split_file):
            raise FileNotFoundError(f"DATASETS.VOC {name!r}: {split_file} does not exist (a VOC "
                                    "folder has Annotations/, ImageSets/Main/SPLIT.txt and "
                                    "JPEGImages/).")
        if not _already(name, dirname=dirname, split=split, thing_classes=classes):
            # year only picks the VOC evaluator's metric, which ssd_r34 does not use (COCO AP)
            register_pascal_voc(name, dirname, split, 2012, class_names=classes)
        names.append(name)
    return names


def dataset_metadata(name):
    """The ``MetadataCatalog`` entry of a registered data set (None if not registered) with
    ``thing_classes`` and, for COCO json sets, ``thing_dataset_id_to_contiguous_id``, read
    from the json when the set has not been loaded yet (as ``load_coco_json`` sets them)."""
    if not name or name not in DatasetCatalog.list():
        return None
    ensure_shapes(name)
    meta = MetadataCatalog.get(name)
    json_file = meta.get("json_file", None)
    if json_file and not meta.get("thing_classes", None) and os.path.isfile(json_file):
        with open(json_file) as f:
            cats = sorted(json.load(f).get("categories") or [], key=lambda c: c["id"])
        if not cats:
            raise ValueError(f"{json_file} has no \"categories\": a COCO json lists its "
                             "classes as [{\"id\": 1, \"name\": \"cat\"}, ...].")
        meta.thing_classes = [c["name"] for c in cats]
        meta.thing_dataset_id_to_contiguous_id = {c["id"]: i for i, c in enumerate(cats)}
    return meta
