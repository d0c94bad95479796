"""Box operations of SSD training, batched over images: IoU, the reference's matching rule,
hard negative mining.

Shapes: N images, G ground truths per image (padded), R default boxes.
"""
from typing import Tuple

import torch
from torch import Tensor
from torchvision.ops import box_iou

__all__ = ["batched_pairwise_iou", "match_default_boxes", "hard_negative_mask"]


def batched_pairwise_iou(gt: Tensor, anchors: Tensor) -> Tensor:
    """
    Args:
        gt: (N, G, 4) XYXY boxes; anchors: (R, 4) XYXY boxes.
    Returns:
        (N, G, R) IoU of every ``gt`` box with every anchor.
    """
    return box_iou(gt.reshape(-1, 4), anchors).view(*gt.shape[:2], -1)


def match_default_boxes(gt_boxes: Tensor, gt_valid: Tensor, anchors: Tensor,
                        iou_threshold: float) -> Tuple[Tensor, Tensor]:
    """The reference matching rule.

    Args:
        gt_boxes: (N, G, 4) ground-truth boxes, padded; gt_valid: (N, G) bool.
        anchors: (R, 4) default boxes.
    Returns:
        matched (N, R) index of the ground truth each default box takes, and
        positive (N, R) bool. Each ground truth's best default box is forced to it
        (IoU 2.0); where several ground truths share a best box, the last one wins.
    """
    iou = batched_pairwise_iou(gt_boxes, anchors)
    iou = torch.where(gt_valid[:, :, None], iou, iou.new_tensor(-1.0))
    best_iou, matched = iou.max(dim=1)  # (N, R): first ground truth on ties
    best_box = iou.argmax(dim=2)  # (N, G): first default box on ties
    j = torch.arange(gt_boxes.shape[1], device=gt_boxes.device).expand_as(best_box)
    j = torch.where(gt_valid, j, torch.full_like(j, -1))
    forced = torch.full_like(matched, -1).scatter_reduce(1, best_box, j, reduce="amax")
    is_forced = forced >= 0
    matched = torch.where(is_forced, forced, matched)
    positive = is_forced | (best_iou > iou_threshold)
    return matched, positive


def hard_negative_mask(ce: Tensor, positive: Tensor, neg_pos_ratio: int) -> Tensor:
    """The k = min(ratio * P, R) boxes with the largest loss after zeroing positives,
    per image: one sort (the reference sorts twice to rank) and a scatter. A full sort, not
    ``topk``: k differs per image and lives on the device (``topk`` would synchronise every
    step; docs/speed.md). Ties do not matter: tied boxes have the same loss, so the same sum.

    Args:
        ce: (N, R) classification loss of every default box; positive: (N, R) bool;
        neg_pos_ratio: negatives kept per positive (MODEL.SSD.NEG_POS_RATIO).
    Returns:
        (N, R) bool, the mined negatives (possibly positives too where k exceeds the
        negatives: the caller adds the two masks as the reference does).
    """
    num_boxes = ce.shape[1]
    k = (positive.sum(dim=1) * neg_pos_ratio).clamp(max=num_boxes)
    loss = ce.detach().masked_fill(positive, 0)
    order = loss.argsort(dim=1, descending=True)
    selected = torch.arange(num_boxes, device=ce.device)[None] < k[:, None]
    return torch.zeros_like(positive).scatter(1, order, selected)
