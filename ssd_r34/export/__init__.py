"""The export room: what is exported (:mod:`.network`: TorchScript, ONNX, the network
alone), who runs it (:mod:`.engines`: onnxruntime, openvino, MODEL.SSD.INFERENCE_BACKEND),
INT8 (:mod:`.quantize`) and how two sets of detections compare (:mod:`.compare`)."""
from .compare import compare_detections, reproduced_detections
from .engines import BACKENDS, ENGINE_DTYPES, EngineNetwork, attach_backend, load_exported
from .network import (SSDExportModule, SSDMLPerfExportModule, detections_to_instances,
                      export_network_onnx, export_onnx, export_torchscript)
from .quantize import calibrate, calibration_images, load_calibration, network_digest
