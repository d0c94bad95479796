"""Built-in data sets: the generated ``shapes_train`` / ``shapes_val``, and
``coco_2017_val_mlperf`` (val2017 as MLPerf inference scores it)."""
from .coco_mlperf import (load_mlperf_coco_json, mlperf_image_ids, register_coco_2017_val_mlperf,
                          register_mlperf_coco)
from .shapes import ensure_shapes, register_shapes

__all__ = ["ensure_shapes", "register_shapes", "mlperf_image_ids", "load_mlperf_coco_json",
           "register_mlperf_coco", "register_coco_2017_val_mlperf"]
