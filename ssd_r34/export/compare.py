"""Two sets of detections compared: :func:`compare_detections` (the same detections up to
rounding: an export against PyTorch) and :func:`reproduced_detections` (how many survive a
lower precision: INT8 against float32). M detections."""
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

Detections = Tuple[Tensor, Tensor, Tensor]  # boxes (M, 4), scores (M,), classes (M,)


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


def _as_tuple(x) -> Detections:
    """(boxes, scores, classes), from Instances (pred_boxes, scores, pred_classes) too."""
    if hasattr(x, "pred_boxes"):
        return x.pred_boxes.tensor, x.scores, x.pred_classes
    return tuple(x)


def compare_detections(ref, out, max_detections: Optional[int] = None,
                       score_tol: float = 1e-4) -> Dict[str, float]:
    """Compare two sets of detections of one image as sets: each reference detection is
    paired with the closest (largest coordinate difference) unpaired one of its class, so
    that near-equal scores that come out in another order still pair up.

    When both lists hold ``max_detections`` (cut at DETECTIONS_PER_IMAGE), the detections
    tied with the lowest score (within ``score_tol``) may be other members of a tie the cut
    went through: those are compared by number and score only (``tied_at_cut``).

    Args:
        ref, out: (boxes (M, 4), scores (M,), classes (M,)) or Instances.

    Returns:
        dict: ``detections_ref``, ``detections_export``, ``same_classes`` (every detection
        paired), ``max_box_diff`` (pixels) and ``max_score_diff`` over the pairs (inf when
        nothing paired though there were detections), ``tied_at_cut``.
    """
    rb, rs, rc = (t.detach().cpu() for t in _as_tuple(ref))
    ob, os_, oc = (t.detach().cpu() for t in _as_tuple(out))
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


def reproduced_detections(ours: Sequence, reference: Sequence, iou: float = 0.9,
                          score_difference: bool = False) -> Tuple:
    """How many of ``reference``'s detections ``ours`` reproduces: same class and box IoU >=
    ``iou``, each of ours used once, reference detections in score order.

    Args:
        ours, reference: lists of Instances (pred_boxes, scores, pred_classes), per image.
        iou: the IoU a reproduced box needs.
        score_difference: also return the largest score difference of a reproduced pair.

    Returns:
        (reproduced, total reference detections), plus that largest score difference (float)
        with ``score_difference``.
    """
    from detectron2.structures import pairwise_iou

    matched = total = 0
    dscore = 0.0
    for a, b in zip(ours, reference):
        total += len(b)
        if not len(a) or not len(b):
            continue
        ious = pairwise_iou(a.pred_boxes, b.pred_boxes)
        ious[a.pred_classes[:, None] != b.pred_classes[None, :]] = 0
        used = torch.zeros(len(a), dtype=torch.bool)
        for j in b.scores.argsort(descending=True).tolist():
            cand = ious[:, j].masked_fill(used, 0)
            i = int(cand.argmax())
            if cand[i] >= iou:
                used[i] = True
                matched += 1
                dscore = max(dscore, abs(float(a.scores[i]) - float(b.scores[j])))
    return (matched, total, dscore) if score_difference else (matched, total)
