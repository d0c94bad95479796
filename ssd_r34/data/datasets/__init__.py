"""Built-in data sets (the generated ``shapes_train`` / ``shapes_val``) and your own, named
in the config (DATASETS.COCO, DATASETS.VOC)."""
from .files import dataset_metadata, json_categories, register_dataset_files
from .shapes import ensure_shapes, register_shapes

__all__ = ["ensure_shapes", "register_shapes", "register_dataset_files", "dataset_metadata",
           "json_categories"]
