"""Export SSD-ResNet34 with its postprocessing to TorchScript and ONNX.

:class:`SSDExportModule` wraps a built :class:`ssd_r34.meta_arch.SSD` into a module that
takes one image at the config's ``INPUT.FIXED_SIZE`` and returns the final detections,
so that the exported graph contains everything after the resize::

    image (1, 3, H, W)  ->  boxes (M, 4) float32, XYXY in pixels of the H x W input,
                            scores (M,) float32, best first,
                            classes (M,) int64, contiguous ids 0 .. NUM_CLASSES - 1

``M`` (at most ``MODEL.SSD.DETECTIONS_PER_IMAGE``) depends on the image: the outputs are
dynamic. The image is either raw ``uint8`` in ``INPUT.FORMAT`` channel order (RGB for the
reference weights) with values 0-255 (``input_format="uint8"``, the default: normalisation
is part of the graph) or already normalised ``float32`` (``input_format="normalized"``).
Boxes are those of :meth:`SSD.inference`: not clipped, in input pixels. To get them on the
original image, scale by (W0 / W, H0 / H) and clip (:func:`detections_to_instances` does).

The postprocessing (:func:`postprocess_single_image`) is the reference's decoding as
:meth:`SSD.inference` computes it (softmax, per-class top-k, score threshold, per-class NMS,
best ``DETECTIONS_PER_IMAGE``), in a form that traces: boolean masks become index / NonZero
ops and NMS ``torchvision::nms`` (TorchScript) or ``NonMaxSuppression`` (ONNX), one per
class. Default boxes are constants of the graph.
"""
import logging
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from detectron2.structures import Boxes, Instances

from ..modeling.postprocessing import postprocess_single_image, rescale_detections

logger = logging.getLogger(__name__)

__all__ = ["SSDExportModule", "export_torchscript", "export_onnx", "load_exported",
           "detections_to_instances", "compare_detections", "postprocess_single_image"]

INPUT_FORMATS = ("uint8", "normalized")
OUTPUT_NAMES = ["boxes", "scores", "classes"]


class SSDExportModule(nn.Module):
    """A traceable single-image SSD: network, default boxes and postprocessing.

    Args:
        model: a built SSD in eval mode (weights loaded).
        input_format: "uint8" (raw 0-255 pixels, normalised inside with the model's
            PIXEL_MEAN / PIXEL_STD) or "normalized" (float32, already normalised).
    """

    def __init__(self, model: nn.Module, input_format: str = "uint8"):
        super().__init__()
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {INPUT_FORMATS}, got {input_format!r}")
        self.model = model
        self.input_format = input_format
        self.input_size = tuple(model.input_size)
        self.train(model.training)

    def example_input(self, image: Optional[Tensor] = None) -> Tensor:
        """A (1, 3, H, W) input of the right type (zeros when no image is given)."""
        H, W = self.input_size
        if image is None:
            image = torch.zeros(1, 3, H, W, dtype=torch.uint8)
        if self.input_format == "normalized" and image.dtype == torch.uint8:
            image = self.normalize(image)
        return image

    def normalize(self, image: Tensor) -> Tensor:
        m = self.model
        return (image.to(m.pixel_mean.device).float() - m.pixel_mean) / m.pixel_std

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        x = self.normalize(image) if self.input_format == "uint8" else image
        loc, conf, anchors = self.model.forward_network(x)
        return postprocess_single_image(self.model, loc, conf, anchors)


def _check_eval(module: nn.Module):
    if module.model.training:
        raise ValueError("Export a model in eval mode (model.eval()): batch norm would use "
                         "batch statistics and the graph would hold the training branch.")


def export_torchscript(module: SSDExportModule, example: Tensor, path: str) -> str:
    """Trace ``module`` on ``example`` (1, 3, H, W) and save it to ``path`` (a TorchScript
    archive loadable with ``torch.jit.load`` without ssd_r34 or Detectron2)."""
    _check_eval(module)
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        # Python ints taken from tensor shapes (fixed input size) and torch.jit's
        # deprecation notice: expected, the graph is checked against eager below.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (example,), check_trace=False)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    traced.save(path)
    return path


def export_onnx(module: SSDExportModule, example: Tensor, path: str, opset: int = 17) -> str:
    """Export ``module`` to ONNX at ``path`` with the TorchScript-based exporter
    (``dynamo=False``): torchvision's NMS has an ONNX symbolic there (NonMaxSuppression),
    and the data-dependent number of detections stays a dynamic output dimension."""
    _check_eval(module)
    import warnings

    import torchvision  # noqa: F401  registers the ONNX symbolic of torchvision::nms

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), path, input_names=["image"], output_names=OUTPUT_NAMES,
            opset_version=opset, dynamo=False, do_constant_folding=True,
            dynamic_axes={"boxes": {0: "detections"}, "scores": {0: "detections"},
                          "classes": {0: "detections"}})
    return path


class _Runner:
    """Calls an exported model with a (1, 3, H, W) tensor and returns torch tensors."""

    def __init__(self, fmt: str, path: str):
        self.fmt = fmt
        self.path = path
        if fmt == "torchscript":
            import warnings

            with warnings.catch_warnings():  # torch.jit's deprecation notice
                warnings.simplefilter("ignore", FutureWarning)
                self._model = torch.jit.load(path, map_location="cpu").eval()
        elif fmt == "onnx":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            self._model = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            self._input = self._model.get_inputs()[0].name
        else:
            raise ValueError(f"Unknown export format {fmt!r}")

    def __call__(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        if self.fmt == "torchscript":
            with torch.no_grad():
                return tuple(self._model(image))
        out = self._model.run(OUTPUT_NAMES, {self._input: image.cpu().numpy()})
        return tuple(torch.from_numpy(np.asarray(o)) for o in out)


def load_exported(fmt: str, path: str) -> _Runner:
    """Load an exported model: ``runner(image) -> (boxes, scores, classes)``.

    TorchScript runs with ``torch.jit.load``, ONNX with onnxruntime (CPU)."""
    return _Runner(fmt, path)


def detections_to_instances(boxes: Tensor, scores: Tensor, classes: Tensor,
                            input_size: Sequence[int], height: int, width: int) -> Instances:
    """Exported outputs -> Detectron2 Instances on the original ``height x width`` image
    (scaled by (W0 / W, H0 / H) and clipped, as
    :func:`~ssd_r34.modeling.postprocessing.rescale_detections`)."""
    r = Instances((int(input_size[0]), int(input_size[1])))
    r.pred_boxes = Boxes(boxes.float())
    r.scores = scores
    r.pred_classes = classes.long()
    return rescale_detections(r, height, width)


def compare_detections(ref: Tuple[Tensor, Tensor, Tensor],
                       out: Tuple[Tensor, Tensor, Tensor]) -> Dict[str, float]:
    """Compare two sets of detections (boxes, scores, classes).

    Each reference detection is paired with the closest (largest coordinate difference)
    unpaired detection of the same class, so that two detections with nearly equal scores
    that come out in the other order still pair up. Returns the counts, ``same_classes``
    (every detection paired), ``max_box_diff`` (pixels) and ``max_score_diff`` over the
    pairs (inf when nothing could be paired though there were detections)."""
    rb, rs, rc = (t.detach().cpu() for t in ref)
    ob, os_, oc = (t.detach().cpu() for t in out)
    rb, ob = rb.double().reshape(-1, 4), ob.double().reshape(-1, 4)
    rs, os_ = rs.double(), os_.double()
    rc, oc = rc.long(), oc.long()
    n_ref, n_out = len(rb), len(ob)
    paired = 0
    box_diff = score_diff = 0.0
    if n_ref and n_out:
        d = (rb[:, None, :] - ob[None, :, :]).abs().amax(dim=2)
        d = torch.where(rc[:, None] == oc[None, :], d, torch.full_like(d, float("inf")))
        used = torch.zeros(n_out, dtype=torch.bool)
        for i in torch.argsort(rs, descending=True).tolist():
            row = torch.where(used, torch.full_like(d[i], float("inf")), d[i])
            j = int(row.argmin())
            if not torch.isfinite(row[j]):
                continue
            used[j] = True
            paired += 1
            box_diff = max(box_diff, float(row[j]))
            score_diff = max(score_diff, float((rs[i] - os_[j]).abs()))
    if paired == 0 and (n_ref or n_out):
        box_diff = score_diff = float("inf")
    return {"detections_ref": n_ref, "detections_export": n_out,
            "same_classes": bool(paired == n_ref == n_out and
                                 torch.equal(torch.sort(rc).values, torch.sort(oc).values)),
            "max_box_diff": box_diff, "max_score_diff": score_diff}

