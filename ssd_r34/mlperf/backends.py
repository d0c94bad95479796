"""Inference backends of the MLPerf harness: what runs a batch of pre-processed images.

A backend is built by a factory ``factory(cfg, args) -> backend`` registered under a name
(:func:`register_backend`; "pytorch" and "onnxruntime" are built in), and has one method::

    backend.predict(inputs) -> [(boxes, scores, classes), ...]

``inputs`` are the QSL's samples: dicts as :class:`~ssd_r34.data.SSDDatasetMapper` makes them
for evaluation (``"image"`` (3, H, W) uint8, or float32 normalised with ``"image_normalized"``
for INPUT.RESIZE_IMPL "cv2-float", plus ``"height"`` / ``"width"`` of the original image).
Per image it returns boxes (M, 4) XYXY in [0, 1] of the original image (clipped), scores
(M,) best first and classes (M,) contiguous ids, as numpy arrays.

Shapes: N images, M detections.
"""
import logging
import os
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "register_backend", "build_backend", "PyTorchBackend",
           "OnnxRuntimeBackend", "normalized_batch"]

Detections = Tuple[np.ndarray, np.ndarray, np.ndarray]
BACKENDS: Dict[str, Callable] = {}


def register_backend(name: str, factory: Callable) -> Callable:
    """Make ``--backend name`` build ``factory(cfg, args)``. Returns the factory."""
    BACKENDS[name] = factory
    return factory


def build_backend(name: str, cfg, args=None):
    if name not in BACKENDS:
        raise ValueError(f"Unknown backend {name!r}: choose one of {sorted(BACKENDS)}.")
    return BACKENDS[name](cfg, args)


def normalized_batch(inputs: List[Dict], pixel_mean, pixel_std) -> torch.Tensor:
    """(N, 3, H, W) float32 normalised images: those marked ``image_normalized`` as they are,
    uint8 ones as the model normalises them ((x - PIXEL_MEAN) / PIXEL_STD)."""
    mean = torch.as_tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.as_tensor(pixel_std, dtype=torch.float32).view(3, 1, 1)
    return torch.stack([x["image"].float() if x.get("image_normalized")
                        else (x["image"].float() - mean) / std for x in inputs])


class PyTorchBackend:
    """The Detectron2 model (with the config's speed options, MODEL.SSD.*), weights from
    MODEL.WEIGHTS; a batch is one forward pass."""

    def __init__(self, cfg, args=None):
        from ..engine import SSDPredictor

        self.model = SSDPredictor(cfg).model  # built, weights loaded, eval mode

    def predict(self, inputs: List[Dict]) -> List[Detections]:
        with torch.no_grad():
            outputs = self.model(inputs)
        out = []
        for x, o in zip(inputs, outputs):
            inst = o["instances"].to("cpu")
            h, w = x["height"], x["width"]
            boxes = inst.pred_boxes.tensor.double() / inst.pred_boxes.tensor.new_tensor(
                [w, h, w, h]).double()
            out.append((boxes.numpy(), inst.scores.numpy(), inst.pred_classes.numpy()))
        return out


class OnnxRuntimeBackend:
    """The ONNX model in MLPerf's input / output convention (``tools/export_model.py
    --mlperf-io``, :class:`~ssd_r34.export.SSDMLPerfExportModule`) on onnxruntime (CPU):
    input ``image`` (N, 3, H, W) normalised, outputs ``bboxes`` (N, M, 4) in [0, 1],
    ``labels`` (N, M) 1-based, ``scores`` (N, M). ``args.onnx_model`` names the file; without
    it the config's model is exported into ``args.output`` (batch 1) first."""

    def __init__(self, cfg, args=None):
        import onnxruntime as ort

        path = getattr(args, "onnx_model", None)
        if not path:
            path = self.export(cfg, os.path.join(getattr(args, "output", ".") or ".",
                                                 "model_mlperf.onnx"))
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        shape = self.session.get_inputs()[0].shape
        self.batch = shape[0] if isinstance(shape[0], int) else None
        self.pixel_mean, self.pixel_std = cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD
        self.path = path

    @staticmethod
    def export(cfg, path: str) -> str:
        from ..engine import SSDPredictor
        from ..export import SSDMLPerfExportModule, export_mlperf_onnx

        model = SSDPredictor(cfg).model
        module = SSDMLPerfExportModule(model).eval()
        logger.info(f"Exporting the model to {path} (MLPerf I/O, batch 1)")
        return export_mlperf_onnx(module, module.example_input(), path)

    def _run(self, x: np.ndarray) -> List[Detections]:
        boxes, labels, scores = self.session.run(["bboxes", "labels", "scores"], {"image": x})
        out = []
        for b, c, s in zip(boxes, labels, scores):
            keep = s > 0  # padding of a batched export
            out.append((b[keep].astype(np.float64), s[keep], c[keep].astype(np.int64) - 1))
        return out

    def predict(self, inputs: List[Dict]) -> List[Detections]:
        x = normalized_batch(inputs, self.pixel_mean, self.pixel_std).numpy()
        if self.batch is None or self.batch == len(x):
            return self._run(x)
        out = []
        for i in range(0, len(x), self.batch):
            chunk = x[i:i + self.batch]
            n = len(chunk)
            if n < self.batch:  # a fixed-batch model: pad the last chunk
                chunk = np.concatenate([chunk, np.zeros((self.batch - n,) + chunk.shape[1:],
                                                        dtype=chunk.dtype)])
            out += self._run(chunk)[:n]
        return out


register_backend("pytorch", PyTorchBackend)
register_backend("onnxruntime", OnnxRuntimeBackend)
