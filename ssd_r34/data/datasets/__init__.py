"""Built-in data sets: the generated ``shapes_train`` / ``shapes_val``."""
from .shapes import ensure_shapes, register_shapes

__all__ = ["ensure_shapes", "register_shapes"]
