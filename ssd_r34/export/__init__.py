"""Export to TorchScript and ONNX (network + postprocessing in one graph)."""
from ..modeling.postprocessing import postprocess_single_image
from .exporter import (SSDExportModule, compare_detections, detections_to_instances,
                       export_onnx, export_torchscript, load_exported)

__all__ = ["SSDExportModule", "export_torchscript", "export_onnx", "load_exported",
           "detections_to_instances", "compare_detections", "postprocess_single_image"]
