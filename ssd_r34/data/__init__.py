"""SSD data: mapper, augmentations and the built-in ``shapes_train`` / ``shapes_val`` set."""
from .mapper import SSDDatasetMapper
from .shapes import ensure_shapes, register_shapes
from .transforms import (ColorJitterTransform, RandomColorJitter, SSDCropTransform,
                         SSDRandomCrop, build_ssd_augmentations)

register_shapes()


def ensure_dataset(name: str) -> None:
    """Make sure a data set's files exist before it is read (generates the built-in
    shapes set on first use; nothing to do for other data sets)."""
    ensure_shapes(name)


__all__ = ["SSDDatasetMapper", "SSDCropTransform", "SSDRandomCrop", "ColorJitterTransform",
           "RandomColorJitter", "build_ssd_augmentations", "register_shapes", "ensure_dataset"]
