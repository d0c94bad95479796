"""Built-in data sets (``shapes_train`` / ``shapes_val``, ``coco_2017_val_mlperf``) and your
own, named in the config (DATASETS.COCO, DATASETS.VOC)."""
from .coco_mlperf import mlperf_image_ids, register_coco_2017_val_mlperf, register_mlperf_coco
from .files import dataset_metadata, register_dataset_files
from .shapes import ensure_shapes, register_shapes

__all__ = ["ensure_shapes", "register_shapes", "mlperf_image_ids", "register_mlperf_coco",
           "register_coco_2017_val_mlperf", "register_dataset_files", "dataset_metadata"]
