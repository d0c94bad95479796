"""Inference engines for the network (MODEL.SSD.INFERENCE_BACKEND): ONNX Runtime and
OpenVINO in float32, and INT8 by post-training static quantisation calibrated once on images
of a registered data set (tools/calibrate.py). ssd_r34's own pre- and post-processing
(normalisation, default boxes, decoding, softmax, NMS, rescaling) stay in PyTorch float32."""
from .backends import (BACKENDS, ENGINE_DTYPES, EngineNetwork, attach_backend,
                       calibrate, calibration_images, export_network_onnx, load_calibration,
                       network_digest, reproduced_detections)

__all__ = ["BACKENDS", "ENGINE_DTYPES", "EngineNetwork", "attach_backend", "calibrate",
           "calibration_images", "export_network_onnx", "load_calibration", "network_digest",
           "reproduced_detections"]
