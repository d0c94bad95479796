"""Two sets of detections compared: the same up to rounding (an export against PyTorch,
:func:`compare_detections`) or how many survive a lower precision (INT8 against float32,
:func:`reproduced_detections`). Both pair greedily (:func:`_greedy`)."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch

INF = float("inf")


def _greedy(cost: torch.Tensor, order: List[int]) -> List[Tuple[int, int]]:
    """Pairs (i, j) of a (R, O) cost (inf: not allowed): each row i, in ``order``, takes its
    cheapest free column."""
    used = torch.zeros(cost.shape[1], dtype=torch.bool)
    pairs = []
    for i in order:
        row = cost[i].masked_fill(used, INF)
        j = int(row.argmin())
        if torch.isfinite(row[j]):
            used[j] = True
            pairs.append((i, j))
    return pairs


def compare_detections(ref, out, max_detections: Optional[int] = None,
                       score_tol: float = 1e-4) -> Dict[str, float]:
    """Compare two sets of detections of one image: each reference detection, best first,
    pairs with the closest (largest coordinate difference) unpaired one of its class. When
    both lists are full (``max_detections``), those tied with the lowest score (within
    ``score_tol``) may be other members of a tie the cut went through: they are compared by
    number and score only (``tied_at_cut``).

    Args:
        ref, out: (boxes (M, 4), scores (M,), classes (M,)) or Instances.

    Returns:
        dict: ``detections_ref``, ``detections_export``, ``same_classes`` (every detection
        paired), ``max_box_diff`` (pixels) and ``max_score_diff`` over the pairs (inf when
        nothing paired though there were detections), ``tied_at_cut``.
    """
    (rb, rs, rc), (ob, os_, oc) = (
        (b.detach().cpu().double().reshape(-1, 4), s.detach().cpu().double().reshape(-1),
         c.detach().cpu().long().reshape(-1))
        for b, s, c in ((x.pred_boxes.tensor, x.scores, x.pred_classes)
                        if hasattr(x, "pred_boxes") else x for x in (ref, out)))
    n_ref, n_out = len(rb), len(ob)
    tail_ok, tied = True, 0
    head_r, head_o = torch.ones(n_ref, dtype=torch.bool), torch.ones(n_out, dtype=torch.bool)
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
                    else INF, "tied_at_cut": tied}
    rb, rs, rc, ob, os_, oc = rb[head_r], rs[head_r], rc[head_r], ob[head_o], os_[head_o], \
        oc[head_o]
    pairs = []
    if len(rb) and len(ob):
        d = (rb[:, None, :] - ob[None, :, :]).abs().amax(dim=2).masked_fill(
            rc[:, None] != oc[None, :], INF)
        pairs = _greedy(d, torch.argsort(rs, descending=True).tolist())
    box_diff = max((float(d[i, j]) for i, j in pairs), default=0.0)
    score_diff = max((float((rs[i] - os_[j]).abs()) for i, j in pairs), default=0.0)
    if not pairs and (len(rb) or len(ob)):
        box_diff = score_diff = INF
    same = len(pairs) == len(rb) == len(ob) and tail_ok  # pairs are of one class
    return {"detections_ref": n_ref, "detections_export": n_out, "same_classes": bool(same),
            "max_box_diff": box_diff, "max_score_diff": score_diff, "tied_at_cut": tied}


def reproduced_detections(ours: Sequence, reference: Sequence, iou: float = 0.9,
                          score_difference: bool = False) -> Tuple:
    """How many of ``reference``'s detections ``ours`` reproduces: same class and box IoU >=
    ``iou``, each of ours used once, reference detections in score order.

    Args:
        ours, reference: lists of Instances, per image.
        score_difference: also return the largest score difference of a reproduced pair.

    Returns:
        (reproduced, total reference detections[, that score difference]).
    """
    from detectron2.structures import pairwise_iou

    matched, total, dscore = 0, 0, 0.0
    for a, b in zip(ours, reference):
        total += len(b)
        if len(a) and len(b):
            ious = pairwise_iou(b.pred_boxes, a.pred_boxes)  # (reference, ours)
            cost = (-ious).masked_fill((ious < iou) | (b.pred_classes[:, None]
                                                       != a.pred_classes[None, :]), INF)
            pairs = _greedy(cost, b.scores.argsort(descending=True).tolist())
            matched += len(pairs)
            dscore = max([dscore] + [abs(float(a.scores[i]) - float(b.scores[j]))
                                     for j, i in pairs])
    return (matched, total, dscore) if score_difference else (matched, total)
