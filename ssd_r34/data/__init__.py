"""SSD data: mapper, augmentations, the resumable training loader, the built-in data sets
(registered on import) and your own named in the config (docs/data.md)."""
from .datasets.coco_mlperf import (mlperf_image_ids, register_coco_2017_val_mlperf,
                                   register_mlperf_coco)
from .datasets.files import dataset_metadata, register_dataset_files
from .datasets.shapes import ensure_shapes, register_shapes
from .loader import build_resumable_train_loader
from .mapper import SSDDatasetMapper
from .transforms import (SSDCropTransform, SSDRandomCrop, build_ssd_augmentations,
                         read_image_cv2, ssd_augmentations)

register_shapes()
register_coco_2017_val_mlperf()

__all__ = ["SSDDatasetMapper", "SSDCropTransform", "SSDRandomCrop", "build_ssd_augmentations",
           "ssd_augmentations", "read_image_cv2", "ensure_shapes", "mlperf_image_ids",
           "register_mlperf_coco", "register_dataset_files", "dataset_metadata",
           "build_resumable_train_loader"]
