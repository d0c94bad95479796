"""What gets exported (docs/export.md): the whole detector, also in MLPerf inference's I/O
convention, or the network alone (for the engines); :func:`_to_onnx` is the one ONNX writer.
Shapes: M detections, R default boxes, K classes."""
import os
import warnings
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from detectron2.structures import Boxes, Instances

from ..modeling.postprocessing import postprocess_single_image, rescale_detections

INPUT_FORMATS = ("uint8", "normalized")


class NetworkModule(nn.Module):
    """Normalised (N, 3, H, W) images -> loc (N, R, 4), conf (N, R, K+1): what engines run;
    the base of the export modules (the SSD ``model``, whose train / eval mode it keeps)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.input_size = model, model.input_size
        self.train(model.training)

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        return self.model.forward_network(images)[:2]


class SSDExportModule(NetworkModule):
    """A traceable single-image SSD: (1, 3, H, W) image -> boxes (M, 4) XYXY in input pixels
    (unclipped), scores (M,) best first, classes (M,) int64 (contiguous ids).

    Args:
        model: a built SSD in eval mode (weights loaded).
        input_format: "uint8" (raw pixels, normalised inside) or "normalized" (float32).
    """

    def __init__(self, model: nn.Module, input_format: str = "uint8"):
        super().__init__(model)
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {INPUT_FORMATS}, got {input_format!r}")
        self.input_format = input_format

    def example_input(self, image: Tensor) -> Tensor:
        """A (1, 3, H, W) uint8 image as this module takes it."""
        return self.normalize(image) if self.input_format == "normalized" else image

    def normalize(self, image: Tensor) -> Tensor:
        m = self.model
        return (image.to(m.pixel_mean.device).float() - m.pixel_mean) / m.pixel_std

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        x = self.normalize(image) if self.input_format == "uint8" else image
        loc, conf, anchors = self.model.forward_network(x)
        return postprocess_single_image(self.model, loc, conf, anchors)


class SSDMLPerfExportModule(NetworkModule):
    """SSD in MLPerf inference's ssd-resnet34 ONNX I/O convention: normalised (N, 3, H, W)
    float32 -> bboxes (N, M, 4) XYXY in [0, 1], labels (N, M) int64 (contiguous id + 1),
    scores (N, M) best first. For N > 1 (fixed at export) each list is padded to
    DETECTIONS_PER_IMAGE with score 0, label 0, an empty box."""

    def __init__(self, model: nn.Module, batch_size: int = 1):
        super().__init__(model)
        self.batch_size = int(batch_size)

    def example_input(self) -> Tensor:
        return torch.zeros(self.batch_size, 3, *self.input_size)

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        H, W = image.shape[-2:]
        scale = torch.tensor([1.0 / W, 1.0 / H, 1.0 / W, 1.0 / H])
        loc, conf, anchors = self.model.forward_network(image)
        out = []
        for i in range(image.shape[0]):
            b, s, c = postprocess_single_image(self.model, loc[i:i + 1], conf[i:i + 1], anchors)
            b, c = (b * scale.to(b.device)).clamp(0.0, 1.0), c + 1
            pad = int(self.model.max_detections_per_image) - b.shape[0]
            out.append((F.pad(b, (0, 0, 0, pad)), F.pad(c, (0, pad)), F.pad(s, (0, pad)))
                       if image.shape[0] > 1 else (b, c, s))
        return tuple(torch.stack(t) for t in zip(*out))


def _check_eval(model: nn.Module):
    if model.training:
        raise ValueError("Export a model in eval mode (model.eval()): batch norm would use "
                         "batch statistics and the graph would hold the training branch.")


def _to_onnx(module: nn.Module, example: Tensor, path: str, input_name: str,
             output_names: Sequence[str], dynamic_axes: Optional[dict], opset: int) -> str:
    """The one ONNX writer, TorchScript-based (``dynamo=False``: NMS has a symbolic there)."""
    import torchvision  # noqa: F401  registers the ONNX symbolic of torchvision::nms

    _check_eval(module.model)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), path, input_names=[input_name],
                          output_names=list(output_names), opset_version=opset, dynamo=False,
                          do_constant_folding=True, dynamic_axes=dynamic_axes)
    return path


def export_onnx(module: nn.Module, example: Tensor, path: str, opset: int = 17) -> str:
    """Export an :class:`SSDExportModule` (outputs ``boxes``, ``scores``, ``classes``) or an
    :class:`SSDMLPerfExportModule` (``bboxes``, ``labels``, ``scores``) on ``example`` to ONNX
    at ``path``, input ``image``, the detections axis dynamic (MLPerf: at batch 1 only).
    Returns path."""
    mlperf = isinstance(module, SSDMLPerfExportModule)
    names = ["bboxes", "labels", "scores"] if mlperf else ["boxes", "scores", "classes"]
    dynamic = None if mlperf and example.shape[0] > 1 else \
        {n: {int(mlperf): "detections"} for n in names}
    return _to_onnx(module, example, path, "image", names, dynamic, opset)


def export_network_onnx(model: nn.Module, path: str, opset: int = 17) -> str:
    """Export the network of an SSD (eval mode) to ONNX at ``path``, float32 whatever its
    INFERENCE_DTYPE: ``images`` (N, 3, H, W) normalised, any N -> ``loc`` (N, R, 4), ``conf``
    (N, R, K+1). Returns path."""
    dtype, model.inference_dtype = model.inference_dtype, None  # the engine quantises
    try:
        return _to_onnx(NetworkModule(model), torch.zeros(1, 3, *model.input_size), path,
                        "images", ["loc", "conf"],
                        {n: {0: "batch"} for n in ("images", "loc", "conf")}, opset)
    finally:
        model.inference_dtype = dtype


def export_torchscript(module: SSDExportModule, example: Tensor, path: str) -> str:
    """Trace ``module`` on ``example`` (1, 3, H, W) and save it to ``path`` (loadable with
    ``torch.jit.load`` without ssd_r34 or Detectron2). Returns path."""
    _check_eval(module.model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shapes as Python ints (fixed size); deprecation
        traced = torch.jit.trace(module, (example,), check_trace=False)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    traced.save(path)
    return path


def detections_to_instances(boxes: Tensor, scores: Tensor, classes: Tensor,
                            input_size: Sequence[int], height: int, width: int) -> Instances:
    """Exported outputs (M, 4), (M,), (M,) -> Instances rescaled to the original ``height x
    width`` image and clipped (``rescale_detections``)."""
    r = Instances((int(input_size[0]), int(input_size[1])), pred_boxes=Boxes(boxes.float()),
                  scores=scores, pred_classes=classes.long())
    return rescale_detections(r, height, width)
