"""Built-in data sets (the generated ``shapes_train`` / ``shapes_val``;
``coco_2017_val_mlperf``, val2017 as MLPerf inference scores it) and your own, named in the
config (DATASETS.COCO, DATASETS.VOC)."""
from .coco_mlperf import (load_mlperf_coco_json, mlperf_image_ids, register_coco_2017_val_mlperf,
                          register_mlperf_coco)
from .files import dataset_metadata, json_categories, register_dataset_files
from .shapes import ensure_shapes, register_shapes

__all__ = ["ensure_shapes", "register_shapes", "mlperf_image_ids", "load_mlperf_coco_json",
           "register_mlperf_coco", "register_coco_2017_val_mlperf", "register_dataset_files",
           "dataset_metadata", "json_categories"]
