"""Export to TorchScript and ONNX (network + postprocessing in one graph), also in MLPerf
inference's ONNX input / output convention."""
from ..modeling.postprocessing import postprocess_single_image
from .exporter import (MLPERF_OUTPUT_NAMES, SSDExportModule, SSDMLPerfExportModule,
                       compare_detections, detections_to_instances, export_mlperf_onnx,
                       export_onnx, export_torchscript, load_exported)

__all__ = ["SSDExportModule", "SSDMLPerfExportModule", "export_torchscript", "export_onnx",
           "export_mlperf_onnx", "load_exported", "detections_to_instances",
           "compare_detections", "postprocess_single_image", "MLPERF_OUTPUT_NAMES"]
