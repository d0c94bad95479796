"""SSD postprocessing shared by the model and its export: rescaling detections to the
original image, and the traceable single-image postprocess.

Shapes: R default boxes, K classes, M detections kept.
"""
from typing import Tuple

import torch
from torch import Tensor, nn

from detectron2.structures import Boxes, Instances

__all__ = ["rescale_detections", "postprocess_single_image"]


def rescale_detections(r: Instances, height: int, width: int) -> Instances:
    """Scale to the original image by (width / W, height / H), then clip (the reference
    clips only at this point and drops nothing).

    Args:
        r: Instances of image size (H, W) with pred_boxes (M, 4), scores, pred_classes.
        height, width: the original image's size.
    Returns:
        Instances of image size (height, width), the same M detections.
    """
    H, W = r.image_size
    out = Instances((height, width))
    boxes = r.pred_boxes.tensor * r.pred_boxes.tensor.new_tensor(
        [width / W, height / H, width / W, height / H])
    out.pred_boxes = Boxes(boxes)
    out.pred_boxes.clip((height, width))
    out.scores = r.scores
    out.pred_classes = r.pred_classes
    return out


def postprocess_single_image(model: nn.Module, loc: Tensor, conf: Tensor,
                             anchors: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """The reference's ``decode_batch`` for one image, written to be traced (what
    :meth:`SSD.inference` does,
    without its data-dependent Python): softmax; per class the TOPK_CANDIDATES_TEST best
    boxes (one ``topk`` on a (K, R) tensor), those with score > SCORE_THRESH_TEST (a mask);
    NMS per class on the class's own boxes (one ``nms`` per class: K is fixed, so the loop
    unrolls into the graph; no coordinate offsets, the IoUs are those of the boxes); all
    classes sorted by score (stable: ties keep class order), the best
    DETECTIONS_PER_IMAGE. Returns boxes (M, 4) unclipped in input pixels, scores (M,),
    classes (M,) int64."""
    import torchvision

    num_classes = model.num_classes
    boxes = model.decode_boxes(loc, anchors)[0]  # (R, 4)
    scores = torch.softmax(conf[0].float(), dim=1)[:, :num_classes].t()  # (K, R)
    k = min(int(model.test_topk_candidates), int(scores.shape[1]))
    top_scores, top_idx = scores.topk(k, dim=1)  # (K, k), best first
    out_boxes, out_scores, out_classes = [], [], []
    for c in range(num_classes):
        keep = top_scores[c] > model.test_score_thresh
        s, b = top_scores[c][keep], boxes[top_idx[c][keep]]
        kept = torchvision.ops.nms(b, s, model.test_nms_thresh)
        out_boxes.append(b[kept])
        out_scores.append(s[kept])
        out_classes.append(torch.full_like(kept, c))
    b, s, c = torch.cat(out_boxes), torch.cat(out_scores), torch.cat(out_classes)
    if torch.onnx.is_in_onnx_export():
        # ONNX has no stable sort; this becomes TopK, which onnxruntime orders by index
        # among equal values, as a stable sort would.
        order = torch.sort(s, descending=True)[1]
    else:
        order = torch.sort(s, descending=True, stable=True)[1]
    order = order[: model.max_detections_per_image]
    return b[order], s[order], c[order]
