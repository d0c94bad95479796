"""Small helpers every layer may ask, at the bottom of the import graph (as
``detectron2/layers/wrappers.py`` holds its tracing check)."""
import torch

__all__ = ["is_exporting"]


def is_exporting() -> bool:
    """Whether the model is being traced, scripted, compiled or exported to ONNX (the
    speed options that swap modules or layouts step aside then)."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()
            or torch.onnx.is_in_onnx_export())
