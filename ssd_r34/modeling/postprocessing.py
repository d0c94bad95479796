"""SSD postprocessing, one code for the model (``SSD.inference``) and its export: the
reference's decoding of one image, and the rescaling to the original image (as
``detectron2/modeling/postprocessing.py``'s ``detector_postprocess``).

Shapes: R default boxes, K classes, M detections kept.
"""
import logging
from typing import Tuple

import torch
import torchvision
from torch import Tensor

from detectron2.structures import Boxes, Instances
from detectron2.utils.logger import log_every_n_seconds

from ..layers import is_exporting, is_exporting_onnx

__all__ = ["rescale_detections", "postprocess_single_image"]


def rescale_detections(r: Instances, height: int, width: int) -> Instances:
    """Scale ``r`` (image size (H, W), pred_boxes (M, 4), scores, pred_classes) to the
    original ``height`` x ``width``, then clip (the reference clips only here and, unlike
    ``detector_postprocess``, drops nothing). Returns Instances with the same M detections."""
    H, W = r.image_size
    boxes = Boxes(r.pred_boxes.tensor * r.pred_boxes.tensor.new_tensor(
        [width / W, height / H, width / W, height / H]))
    boxes.clip((height, width))
    return Instances((height, width), pred_boxes=boxes, scores=r.scores,
                     pred_classes=r.pred_classes)


def postprocess_single_image(model, loc: Tensor, conf: Tensor,
                             anchors: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """The reference's ``decode_batch`` for one image, traceable (no data-dependent Python):
    softmax; per class the best TOPK_CANDIDATES_TEST boxes of score > SCORE_THRESH_TEST (one
    ``topk`` on (K, R)); NMS per class (the loop over the fixed K unrolls when traced); all
    classes sorted by score (stable: ties keep class order), the best DETECTIONS_PER_IMAGE.
    NaN scores are never candidates; candidates whose boxes decode to NaN / inf are dropped
    (with a warning outside export).

    Args:
        model: an SSD (reads num_classes, box2box_transform, test_score_thresh,
            test_topk_candidates, test_nms_thresh, max_detections_per_image).
        loc: (1, R, 4); conf: (1, R, K+1); anchors: (R, 4) XYXY.
    Returns:
        boxes (M, 4) XYXY unclipped in input pixels, scores (M,), classes (M,) int64.
    """
    num_classes = model.num_classes
    boxes = model.box2box_transform.apply_deltas(loc[0].float(), anchors)  # (R, 4)
    scores = torch.softmax(conf[0].float(), dim=1)[:, :num_classes].t()  # (K, R)
    candidate = scores > model.test_score_thresh
    k = min(int(model.test_topk_candidates), int(scores.shape[1]))
    # Non-candidates sink below every candidate, so each class's top-k are its candidates.
    top_scores, top_idx = torch.where(candidate, scores, -1.0).topk(k, dim=1)  # (K, k)
    keep = candidate.gather(1, top_idx)
    finite = torch.isfinite(boxes).all(dim=1)[top_idx]
    if not is_exporting():
        dropped = int((keep & ~finite).sum())
        if dropped:
            log_every_n_seconds(
                logging.WARNING, f"SSD inference: dropped {dropped} candidate boxes decoded "
                "from non-finite network outputs (NaN / inf: diverged or damaged weights?).",
                n=60, name=__name__)
    keep = keep & finite
    out_boxes, out_scores, out_classes = [], [], []
    for c in range(num_classes):
        s, b = top_scores[c][keep[c]], boxes[top_idx[c][keep[c]]]
        kept = torchvision.ops.nms(b, s, model.test_nms_thresh)
        out_boxes.append(b[kept])
        out_scores.append(s[kept])
        out_classes.append(torch.full_like(kept, c))
    b, s, c = torch.cat(out_boxes), torch.cat(out_scores), torch.cat(out_classes)
    if is_exporting_onnx():
        # ONNX has no stable sort; this becomes TopK, which onnxruntime orders by index
        # among equal values, as a stable sort would.
        order = torch.sort(s, descending=True)[1]
    else:
        order = torch.sort(s, descending=True, stable=True)[1]
    order = order[: model.max_detections_per_image]
    return b[order], s[order], c[order]
