"""SSD data: mapper, augmentations, the resumable training loader, the built-in
``shapes_train`` / ``shapes_val`` set and ``coco_2017_val_mlperf`` (registered on import) and
your own sets named in the config (DATASETS.COCO / DATASETS.VOC, ``register_dataset_files``)."""
from .datasets import (dataset_metadata, ensure_shapes, json_categories, mlperf_image_ids,
                       register_coco_2017_val_mlperf, register_dataset_files,
                       register_mlperf_coco, register_shapes)
from .loader import (ResumableTrainingSampler, build_resumable_train_loader,
                     find_resumable_sampler)
from .mapper import SSDDatasetMapper
from .transforms import (ColorJitterTransform, RandomColorJitter, SSDCropTransform,
                         SSDRandomCrop, build_ssd_augmentations, cv2_float_preprocess,
                         read_image_cv2, ssd_augmentations)

register_shapes()
register_coco_2017_val_mlperf()


def ensure_dataset(name: str) -> None:
    """Make sure a data set's files exist before it is read (generates the built-in
    shapes set on first use; nothing to do for other data sets)."""
    ensure_shapes(name)


__all__ = ["SSDDatasetMapper", "SSDCropTransform", "SSDRandomCrop", "ColorJitterTransform",
           "RandomColorJitter", "build_ssd_augmentations", "ssd_augmentations",
           "cv2_float_preprocess", "read_image_cv2", "register_shapes", "ensure_dataset",
           "mlperf_image_ids", "register_mlperf_coco", "register_coco_2017_val_mlperf",
           "register_dataset_files", "dataset_metadata", "json_categories",
           "ResumableTrainingSampler", "build_resumable_train_loader", "find_resumable_sampler"]
