"""Small helpers every room may ask, at the bottom of the import graph (as
``detectron2/layers/wrappers.py`` holds its tracing check): the export check and the
helpers of the config checks (modeling/meta_arch.py, data/transforms.py), which refuse a
setting that cannot work naming the key and a value that works (docs/validation.md)."""
import math

import torch

__all__ = ["is_exporting", "is_exporting_onnx", "refuse", "is_number", "is_int", "are_numbers",
           "check_numbers", "check_fixed_size"]


def is_exporting_onnx() -> bool:
    """Whether an ONNX export is tracing the model."""
    return torch.onnx.is_in_onnx_export()


def is_exporting() -> bool:
    """Whether the model is being traced, scripted, compiled or exported to ONNX (the
    speed options that swap modules or layouts step aside then)."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()
            or is_exporting_onnx())


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def refuse(key: str, value, need: str, example: str):
    raise ValueError(f"{key} {value!r}: {need}; e.g. {key} {example}.")


def are_numbers(value, n=None, ok=lambda v: True) -> bool:
    """Whether ``value`` is a list or tuple of ``n`` (None: any number of) finite numbers that
    pass ``ok``."""
    return isinstance(value, (list, tuple)) and n in (None, len(value)) and all(
        is_number(v) and ok(v) for v in value)


def check_numbers(key, value, n, need, example, ok=lambda v: True):
    # ``value`` as a list if :func:`are_numbers`; refused otherwise.
    if not are_numbers(value, n, ok):
        refuse(key, value, need, example)
    return list(value)


def check_fixed_size(cfg):
    """Refuse an INPUT.FIXED_SIZE that is not (height, width) ints >= 1 (whether the network
    can take that size with MODEL.SSD.STRIDES is checked when the model is built)."""
    check_numbers("INPUT.FIXED_SIZE", cfg.INPUT.FIXED_SIZE, 2,
                  "(height, width): two positive integers", "(300, 300) or (1200, 1200)",
                  lambda v: is_int(v) and v >= 1)
