"""``coco_2017_val_mlperf``: COCO val2017 as MLPerf inference scores it (4952 images, in the
order of its accuracy script; docs/data.md, "COCO"). Files: Detectron2's layout under
``$DETECTRON2_DATASETS/coco``."""
import contextlib
import io
import os
from typing import List

from pycocotools.coco import COCO

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata
from detectron2.utils.file_io import PathManager

__all__ = ["mlperf_image_ids", "load_mlperf_coco_json", "register_mlperf_coco",
           "register_coco_2017_val_mlperf"]


def mlperf_image_ids(coco, remove_empty: bool) -> List[int]:
    """Image ids in the order of MLPerf's accuracy script.

    Args:
        coco: a ``pycocotools.coco.COCO`` of the annotation file.
        remove_empty: the script's ``--remove-48-empty-images`` (else every image, file order).
    Returns:
        list of image ids; position i is ``qsl_idx`` i.
    """
    if not remove_empty:
        return [im["id"] for im in coco.dataset["images"]]
    ids = []
    for c in coco.getCatIds():
        ids += coco.catToImgs[c]
    return list(set(ids))


def load_mlperf_coco_json(json_file: str, image_root: str, dataset_name: str,
                          remove_empty: bool = True):
    """Detectron2 dataset dicts (``load_coco_json``) in MLPerf's order."""
    for path, what in ((json_file, "annotation file"), (image_root, "image folder")):
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{dataset_name}: the {what} {path} does not exist. Put COCO under "
                "$DETECTRON2_DATASETS/coco (annotations/instances_val2017.json, val2017/) or "
                "set DETECTRON2_DATASETS.")
    dicts = {d["image_id"]: d for d in load_coco_json(json_file, image_root, dataset_name)}
    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints its progress
        coco = COCO(PathManager.get_local_path(json_file))
    return [dicts[i] for i in mlperf_image_ids(coco, remove_empty)]


def register_mlperf_coco(name: str, json_file: str, image_root: str, metadata=None,
                         remove_empty: bool = True) -> str:
    """Register a COCO-format data set in MLPerf's order (lazy); its metadata gets
    ``mlperf_remove_empty_images`` (the harness names the accuracy-script flags from it)."""
    if name in DatasetCatalog.list():
        return name
    DatasetCatalog.register(name, lambda: load_mlperf_coco_json(json_file, image_root, name,
                                                                remove_empty))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root,
                                  evaluator_type="coco",
                                  mlperf_remove_empty_images=bool(remove_empty),
                                  **(metadata or {}))
    return name


def register_coco_2017_val_mlperf(root=None) -> str:
    """Register ``coco_2017_val_mlperf`` under ``root`` (default ``$DETECTRON2_DATASETS``,
    else ``datasets``), with Detectron2's COCO metadata (80 classes and their id map)."""
    root = os.path.expanduser(root or os.getenv("DETECTRON2_DATASETS", "datasets"))
    return register_mlperf_coco(
        "coco_2017_val_mlperf", os.path.join(root, "coco/annotations/instances_val2017.json"),
        os.path.join(root, "coco/val2017"), _get_builtin_metadata("coco"), remove_empty=True)
