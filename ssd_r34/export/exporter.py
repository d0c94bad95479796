"""Export SSD-ResNet34 with its postprocessing to TorchScript and ONNX.

:class:`SSDExportModule` wraps a built :class:`ssd_r34.meta_arch.SSD` into a module that
takes one image at the config's ``INPUT.FIXED_SIZE`` and returns the final detections,
so that the exported graph contains everything after the resize::

    image (1, 3, H, W)  ->  boxes (M, 4) float32, XYXY in pixels of the H x W input,
                            scores (M,) float32, best first,
                            classes (M,) int64, contiguous ids 0 .. NUM_CLASSES - 1

``M`` (at most ``TEST.DETECTIONS_PER_IMAGE``) depends on the image: the outputs are
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

__all__ = ["SSDExportModule", "SSDMLPerfExportModule", "export_torchscript", "export_onnx",
           "export_mlperf_onnx", "load_exported", "detections_to_instances",
           "compare_detections", "postprocess_single_image", "MLPERF_OUTPUT_NAMES"]

INPUT_FORMATS = ("uint8", "normalized")
OUTPUT_NAMES = ["boxes", "scores", "classes"]
MLPERF_OUTPUT_NAMES = ["bboxes", "labels", "scores"]


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


class SSDMLPerfExportModule(nn.Module):
    """SSD in the input / output convention of MLPerf inference's ssd-resnet34 ONNX model
    (what mlcommons/inference ``vision/classification_and_detection/python/main.py --profile
    ssd-resnet34-onnxruntime`` feeds and reads)::

        image (N, 3, H, W) float32, normalised as MLPerf's pre-processing leaves it
              (RGB, / 255, - mean, / std: INPUT.RESIZE_IMPL "cv2-float")
        ->  bboxes (N, M, 4) float32, [x1, y1, x2, y2] in [0, 1] of the image (clipped),
            labels (N, M) int64, contiguous class id + 1 (1-based),
            scores (N, M) float32, best first.

    With N == 1, M is the number of detections (dynamic). With N > 1 every image's list is
    padded to DETECTIONS_PER_IMAGE with score 0, label 0 and an empty box (readers that stop
    at a score threshold, as MLPerf's, never see the padding). N is fixed at export.
    """

    def __init__(self, model: nn.Module, batch_size: int = 1):
        super().__init__()
        self.model = model
        self.batch_size = int(batch_size)
        self.input_size = tuple(model.input_size)
        self.train(model.training)

    def example_input(self) -> Tensor:
        H, W = self.input_size
        return torch.zeros(self.batch_size, 3, H, W)

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        H, W = image.shape[-2:]
        scale = torch.tensor([1.0 / W, 1.0 / H, 1.0 / W, 1.0 / H])
        loc, conf, anchors = self.model.forward_network(image)
        out_b, out_l, out_s = [], [], []
        m = int(self.model.max_detections_per_image)
        for i in range(image.shape[0]):
            b, s, c = postprocess_single_image(self.model, loc[i:i + 1], conf[i:i + 1], anchors)
            b = (b * scale.to(b.device)).clamp(0.0, 1.0)
            c = c + 1
            if image.shape[0] > 1:
                pad = m - b.shape[0]
                b = torch.nn.functional.pad(b, (0, 0, 0, pad))
                s = torch.nn.functional.pad(s, (0, pad))
                c = torch.nn.functional.pad(c, (0, pad))
            out_b.append(b)
            out_l.append(c)
            out_s.append(s)
        return torch.stack(out_b), torch.stack(out_l), torch.stack(out_s)


def export_mlperf_onnx(module: SSDMLPerfExportModule, example: Tensor, path: str,
                       opset: int = 17) -> str:
    """Export an :class:`SSDMLPerfExportModule` to ONNX at ``path`` (input ``image``,
    outputs ``bboxes``, ``labels``, ``scores``; the detections axis dynamic for batch 1)."""
    _check_eval(module)
    import warnings

    import torchvision  # noqa: F401  registers the ONNX symbolic of torchvision::nms

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    dynamic = {n: {1: "detections"} for n in MLPERF_OUTPUT_NAMES} if example.shape[0] == 1 else None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), path, input_names=["image"],
                          output_names=MLPERF_OUTPUT_NAMES, opset_version=opset, dynamo=False,
                          do_constant_folding=True, dynamic_axes=dynamic)
    return path


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


def _pair(rb, rs, rc, ob, os_, oc):
    """Greedy pairing (see compare_detections): (paired, max box diff, max score diff)."""
    paired, box_diff, score_diff = 0, 0.0, 0.0
    if len(rb) and len(ob):
        d = (rb[:, None, :] - ob[None, :, :]).abs().amax(dim=2)
        d = torch.where(rc[:, None] == oc[None, :], d, torch.full_like(d, float("inf")))
        used = torch.zeros(len(ob), dtype=torch.bool)
        for i in torch.argsort(rs, descending=True).tolist():
            row = torch.where(used, torch.full_like(d[i], float("inf")), d[i])
            j = int(row.argmin())
            if not torch.isfinite(row[j]):
                continue
            used[j] = True
            paired += 1
            box_diff = max(box_diff, float(row[j]))
            score_diff = max(score_diff, float((rs[i] - os_[j]).abs()))
    return paired, box_diff, score_diff


def compare_detections(ref: Tuple[Tensor, Tensor, Tensor], out: Tuple[Tensor, Tensor, Tensor],
                       max_detections: Optional[int] = None,
                       score_tol: float = 1e-4) -> Dict[str, float]:
    """Compare two sets of detections (boxes, scores, classes) as sets.

    Each reference detection is paired with the closest (largest coordinate difference)
    unpaired detection of the same class, so that detections with equal or nearly equal
    scores that come out in another order still pair up.

    When both lists hold ``max_detections`` (the list was cut at DETECTIONS_PER_IMAGE), the
    detections whose score ties the lowest one (within ``score_tol``) may be different members
    of a tie the cut went through (which of the tied candidates survive the cut depends on
    the sort's order among equal scores: e.g. a random model gives thousands of equal
    scores). Those are compared by number and score only, and counted in ``tied_at_cut``.

    Returns:
        dict: the counts, ``same_classes`` (every detection paired), ``max_box_diff`` (pixels)
        and ``max_score_diff`` over the pairs (inf when nothing could be paired though there
        were detections), ``tied_at_cut``.
    """
    rb, rs, rc = (t.detach().cpu() for t in ref)
    ob, os_, oc = (t.detach().cpu() for t in out)
    rb, ob = rb.double().reshape(-1, 4), ob.double().reshape(-1, 4)
    rs, os_ = rs.double().reshape(-1), os_.double().reshape(-1)
    rc, oc = rc.long().reshape(-1), oc.long().reshape(-1)
    n_ref, n_out = len(rb), len(ob)
    tail_ok, tied = True, 0
    head_r = torch.ones(n_ref, dtype=torch.bool)
    head_o = torch.ones(n_out, dtype=torch.bool)
    if max_detections and n_ref == n_out == int(max_detections) and n_ref:
        cut = float(torch.minimum(rs.min(), os_.min()))
        head_r, head_o = rs > cut + score_tol, os_ > cut + score_tol
        tail_r, tail_o = torch.sort(rs[~head_r]).values, torch.sort(os_[~head_o]).values
        tied = int((~head_r).sum())
        tail_ok = len(tail_r) == len(tail_o) and (
            len(tail_r) == 0 or float((tail_r - tail_o).abs().max()) <= score_tol)
        if tied == n_ref:  # all tied: nothing but their number and scores to compare
            return {"detections_ref": n_ref, "detections_export": n_out,
                    "same_classes": bool(tail_ok), "max_box_diff": 0.0,
                    "max_score_diff": float((tail_r - tail_o).abs().max()) if tail_ok
                    else float("inf"), "tied_at_cut": tied}
    paired, box_diff, score_diff = _pair(rb[head_r], rs[head_r], rc[head_r], ob[head_o],
                                         os_[head_o], oc[head_o])
    n_head_r, n_head_o = int(head_r.sum()), int(head_o.sum())
    if paired == 0 and (n_head_r or n_head_o):
        box_diff = score_diff = float("inf")
    same = (paired == n_head_r == n_head_o and tail_ok and torch.equal(
        torch.sort(rc[head_r]).values, torch.sort(oc[head_o]).values))
    return {"detections_ref": n_ref, "detections_export": n_out, "same_classes": bool(same),
            "max_box_diff": box_diff, "max_score_diff": score_diff, "tied_at_cut": tied}
