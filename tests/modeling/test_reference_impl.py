"""Sanity tests of the plain reference re-implementation (reference/reference_impl.py).

Expected numbers come from the MLPerf reference (its default boxes, encoder and loss) or
are worked out by hand here, never from the code under test.
"""

import math
import os
import sys

import pytest
import torch

from reference_impl import (  # noqa: E402
    ReferenceSSDR34,
    calc_iou_tensor,
    default_boxes_ltrb,
    reference_decode,
    reference_default_boxes,
    reference_encode,
    reference_loss,
)


@pytest.fixture(scope="module")
def model300():
    torch.manual_seed(0)
    return ReferenceSSDR34(num_classes=81, strides=(1, 1, 2, 2, 2, 1))


# ------------------------------------------------------------------ network


def _expected_keys():
    """State-dict keys as listed in spec section 2, written out independently."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = {"model.layer1.0.weight"}
    keys |= {"model.layer1.1." + t for t in bn}

    def block(prefix, downsample):
        out = {prefix + ".conv1.weight", prefix + ".conv2.weight"}
        out |= {prefix + ".bn1." + t for t in bn}
        out |= {prefix + ".bn2." + t for t in bn}
        if downsample:
            out.add(prefix + ".downsample.0.weight")
            out |= {prefix + ".downsample.1." + t for t in bn}
        return out

    for i in range(3):
        keys |= block("model.layer1.4.%d" % i, False)
    for i in range(4):
        keys |= block("model.layer1.5.%d" % i, i == 0)
    for i in range(6):
        keys |= block("model.layer2.0.%d" % i, i == 0)
    for i in range(5):
        for j in (0, 2):
            keys |= {"additional_blocks.%d.%d.%s" % (i, j, t) for t in ("weight", "bias")}
    for i in range(6):
        for head in ("loc", "conf"):
            keys |= {"%s.%d.%s" % (head, i, t) for t in ("weight", "bias")}
    return keys


def test_state_dict_keys_and_shapes(model300):
    sd = model300.state_dict()
    assert set(sd) == _expected_keys()
    for k in [
        "model.layer1.4.0.conv1.weight",
        "model.layer1.5.0.downsample.0.weight",
        "model.layer2.0.0.downsample.1.running_mean",
        "additional_blocks.4.2.bias",
        "loc.5.weight",
        "conf.0.bias",
    ]:
        assert k in sd
    assert tuple(sd["loc.0.weight"].shape) == (16, 256, 3, 3)
    assert tuple(sd["conf.0.weight"].shape) == (4 * 81, 256, 3, 3)
    assert tuple(sd["conf.1.weight"].shape) == (6 * 81, 512, 3, 3)
    assert tuple(sd["loc.5.weight"].shape) == (16, 256, 3, 3)
    assert tuple(sd["additional_blocks.0.0.weight"].shape) == (256, 256, 1, 1)
    assert tuple(sd["additional_blocks.0.2.weight"].shape) == (512, 256, 3, 3)
    assert tuple(sd["additional_blocks.2.2.weight"].shape) == (256, 128, 3, 3)
    # layer3's first block is changed to stride 1.
    assert model300.model.layer2[0][0].conv1.stride == (1, 1)
    assert model300.model.layer2[0][0].downsample[0].stride == (1, 1)


def test_parameter_count(model300):
    n = sum(p.numel() for p in model300.parameters())
    assert abs(n / 1e6 - 19.97) <= 0.01


def test_unequal_head_strides_rejected():
    with pytest.raises(ValueError):
        ReferenceSSDR34(strides=(1, 2, 2, 2, 2, 1))


def test_head_output_sizes_300_and_box_count(model300):
    bn = model300.model.layer1[1]
    before = bn.running_mean.clone()
    sizes = model300.head_output_sizes(300)
    assert sizes == [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
    assert torch.equal(bn.running_mean, before)  # measurement leaves BN stats alone
    assert model300.training
    dboxes = reference_default_boxes(300, sizes)
    assert tuple(dboxes.shape) == (8732, 4)


def test_forward_shapes_and_channel_order(model300):
    # Level-0 heads with zero weights and bias = channel index: then the output at box
    # index a*h*w + y*w + x of coordinate k must be the channel k*nd + a.
    m = model300
    nd, hw = 4, 38 * 38
    saved = {k: v.clone() for k, v in m.state_dict().items() if k.startswith(("loc.0", "conf.0"))}
    try:
        with torch.no_grad():
            m.loc[0].weight.zero_()
            m.loc[0].bias.copy_(torch.arange(16, dtype=torch.float32))
            m.conf[0].weight.zero_()
            m.conf[0].bias.copy_(torch.arange(nd * 81, dtype=torch.float32))
            m.eval()
            locs, confs = m(torch.randn(1, 3, 300, 300))
    finally:
        m.load_state_dict(saved, strict=False)
        m.train()
    assert tuple(locs.shape) == (1, 4, 8732)
    assert tuple(confs.shape) == (1, 81, 8732)
    for k in range(4):
        for a in range(nd):
            for idx in (a * hw, a * hw + 5 * 38 + 7, (a + 1) * hw - 1):
                assert locs[0, k, idx].item() == k * nd + a
    for c in (0, 1, 80):
        for a in range(nd):
            assert confs[0, c, a * hw + 3].item() == c * nd + a


# ------------------------------------------------------------------ default boxes


def test_default_boxes_values_300():
    sizes = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
    d = reference_default_boxes(300, sizes).double()
    # level 0: step int(300/38) = 7, fk = 300 // 7 = 42; sk1 = 21/300, sk2 = 45/300.
    fk = 42
    sk1, sk2 = 0.07, 0.15
    assert d[0].tolist() == pytest.approx([0.5 / fk, 0.5 / fk, sk1, sk1], rel=1e-6)
    # box type 0, y = 2, x = 5
    assert d[2 * 38 + 5].tolist() == pytest.approx([5.5 / fk, 2.5 / fk, sk1, sk1], rel=1e-6)
    # box type 1 (sk3), type 2 (ratio 2, wide), type 3 (ratio 2, tall)
    sk3 = math.sqrt(sk1 * sk2)
    r = math.sqrt(2)
    assert d[1 * 1444].tolist() == pytest.approx([0.5 / fk, 0.5 / fk, sk3, sk3], rel=1e-6)
    assert d[2 * 1444].tolist() == pytest.approx([0.5 / fk, 0.5 / fk, sk1 * r, sk1 / r], rel=1e-6)
    assert d[3 * 1444].tolist() == pytest.approx([0.5 / fk, 0.5 / fk, sk1 / r, sk1 * r], rel=1e-6)
    # last level: 1x1, fk = 300 // 300 = 1, sk1 = 261/300, sk2 = 315/300; the tall
    # ratio-2 box has h = sk1*sqrt(2) > 1 and is clamped to 1.
    last = d[-4:]
    assert last[0].tolist() == pytest.approx([0.5, 0.5, 0.87, 0.87], rel=1e-6)
    assert last[1, 2].item() == pytest.approx(math.sqrt(0.87 * 1.05), rel=1e-6)
    assert last[3].tolist() == pytest.approx([0.5, 0.5, 0.87 / r, 1.0], rel=1e-6)
    assert d.min().item() >= 0.0 and d.max().item() <= 1.0
    assert reference_default_boxes(300, sizes).dtype == torch.float32
    ltrb = default_boxes_ltrb(reference_default_boxes(300, sizes))
    assert ltrb[-1, 1].item() == pytest.approx(0.0, abs=1e-7)
    assert ltrb[0, 0].item() < 0  # corner form may leave [0, 1]


def test_default_box_counts_from_spec_sizes():
    s1200 = [(50, 50), (25, 25), (13, 13), (7, 7), (3, 3), (3, 3)]
    assert reference_default_boxes((1200, 1200), s1200).shape[0] == 15130
    s800 = [(50, 75), (25, 38), (13, 19), (13, 19), (12, 18), (11, 17)]
    d = reference_default_boxes((800, 1200), s800).double()
    assert d.shape[0] == 25276
    # level 0 of 800x1200: sk1 = int(21*800/300)/800 = 56/800, sk2 = int(45*1200/300)/1200
    sk1, sk2 = 56 / 800, 180 / 1200
    assert d[0, 2].item() == pytest.approx(sk1, rel=1e-6)
    assert d[50 * 75, 2].item() == pytest.approx(math.sqrt(sk1 * sk2), rel=1e-6)
    # centres: step_w = int(1200/75) = 16, fk_w = 75; step_h = 16, fk_h = 50
    assert d[75 + 1, :2].tolist() == pytest.approx([1.5 / 75, 1.5 / 50], rel=1e-6)


# ------------------------------------------------------------------ IoU and matching


def test_calc_iou_tensor():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 2.0, 2.0]])
    iou = calc_iou_tensor(a, b)
    expected = [[1 / 7, 0.0, 1.0], [0.0, 0.0, 0.25]]
    assert iou.tolist() == [pytest.approx(r) for r in expected]


def _xywh(ltrb):
    x0, y0, x1, y1 = ltrb
    return [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]


def test_encode_later_gt_wins_shared_best_box():
    dboxes = torch.tensor(
        [
            [0.5, 0.5, 0.4, 0.4],  # 0: ltrb (0.3,0.3,0.7,0.7), best box of gt0 AND gt1
            [0.1, 0.1, 0.1, 0.1],  # 1: far away -> background
            [0.9, 0.9, 0.1, 0.1],  # 2: best box of gt2
            [0.5, 0.4, 0.4, 0.2],  # 3: IoU 0.526 with gt0 (its argmax), 0.35 with gt1
            [0.5, 0.375, 0.4, 0.15],  # 4: IoU 0.39 with gt0 -> background
        ]
    )
    gt0 = [0.3, 0.3, 0.7, 0.68]  # IoU with box 0: 0.95
    gt1 = [0.35, 0.35, 0.7, 0.7]  # IoU with box 0: 0.766
    gt2 = [0.84, 0.84, 0.96, 0.96]
    gt = torch.tensor([gt0, gt1, gt2])
    labels = torch.tensor([5, 7, 3])
    loc, lab = reference_encode(gt, labels, dboxes)
    assert lab.dtype == torch.int64
    # Box 0's argmax is gt0, but both gt0 and gt1 force it: the later one (gt1) wins.
    assert lab.tolist() == [7, 0, 3, 5, 0]
    assert loc[0].tolist() == pytest.approx(_xywh(gt1), abs=1e-6)
    assert loc[2].tolist() == pytest.approx(_xywh(gt2), abs=1e-6)
    assert loc[3].tolist() == pytest.approx(_xywh(gt0), abs=1e-6)
    # Background boxes carry their own default box.
    assert loc[1].tolist() == pytest.approx(dboxes[1].tolist(), abs=1e-6)
    assert loc[4].tolist() == pytest.approx(dboxes[4].tolist(), abs=1e-6)

    # Swapping gt0 and gt1 swaps the winner of box 0.
    _, lab2 = reference_encode(gt[[1, 0, 2]], labels[[1, 0, 2]], dboxes)
    assert lab2[0].item() == 5


def test_encode_forced_match_below_threshold():
    dboxes = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]])
    gt = torch.tensor([[0.4, 0.4, 0.5, 0.5]])  # IoU 0.25 with box 0: forced anyway
    loc, lab = reference_encode(gt, torch.tensor([9]), dboxes)
    assert lab.tolist() == [9, 0]
    assert loc[0].tolist() == pytest.approx([0.45, 0.45, 0.1, 0.1], abs=1e-6)


# ------------------------------------------------------------------ loss


def _logits(weights):
    return [math.log(w) for w in weights]


def _loss_case():
    dboxes = torch.tensor([[0.5, 0.5, 0.2, 0.2]] * 6)
    gloc = dboxes.t().clone().unsqueeze(0)  # (1, 4, 6): background boxes = default boxes
    gloc[0, :, 0] = torch.tensor([0.52, 0.5, 0.2, 0.4])  # tx=1, ty=0, tw=0, th=log2/0.2
    ploc = torch.full((1, 4, 6), 7.0)  # ignored on negatives
    ploc[0, :, 0] = torch.tensor([0.5, 0.0, 2.0, 0.0])
    weights = [[1, 1, 2], [1, 1, 1], [2, 1, 1], [1, 2, 1], [8, 1, 1], [1, 1, 2]]
    plabel = torch.tensor([_logits(w) for w in weights]).t().unsqueeze(0)  # (1, 3, 6)
    return dboxes, ploc, plabel, gloc


def test_loss_hand_computed():
    dboxes, ploc, plabel, gloc = _loss_case()
    glabel = torch.tensor([[2, 0, 0, 0, 0, 0]])
    # loc: diffs (-0.5, 0, 2, -log2/0.2) -> 0.125 + 0 + 1.5 + (log2/0.2 - 0.5)
    loc_expected = 0.125 + 1.5 + (math.log(2) / 0.2 - 0.5)
    # conf: positive CE log(4/2); negatives' CE log3, log2, log4, log(10/8), log4;
    # P = 1 -> 3 hardest negatives: log4, log4, log3.
    conf_expected = math.log(2) + 2 * math.log(4) + math.log(3)

    loss, loc_part, conf_part = reference_loss(ploc, plabel, gloc, glabel, dboxes)
    assert loc_part.item() == pytest.approx(loc_expected, rel=1e-5)
    assert conf_part.item() == pytest.approx(conf_expected, rel=1e-5)
    assert loss.item() == pytest.approx(loc_expected + conf_expected, rel=1e-5)

    # A second image without positives counts as 0 in the batch mean.
    loss2, loc2, conf2 = reference_loss(
        ploc.repeat(2, 1, 1),
        plabel.repeat(2, 1, 1),
        gloc.repeat(2, 1, 1),
        torch.tensor([[2, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]),
        dboxes,
    )
    assert loss2.item() == pytest.approx((loc_expected + conf_expected) / 2, rel=1e-5)
    assert loc2.item() == pytest.approx(loc_expected / 2, rel=1e-5)
    assert conf2.item() == pytest.approx(conf_expected / 2, rel=1e-5)


def test_loss_positives_counted_twice_when_3p_covers_all_boxes():
    # The reference's double sort: with k = min(3P, A) = A every box (positives
    # included) is in neg_mask, so positives' CE counts twice. Pinned on purpose.
    dboxes, ploc, plabel, gloc = _loss_case()
    gloc[0, :, 1] = torch.tensor([0.5, 0.5, 0.2, 0.2])  # box 1 positive, zero offsets
    ploc[0, :, 1] = 0.0
    glabel = torch.tensor([[2, 1, 0, 0, 0, 0]])  # P = 2, 3P = 6 = A
    loc_expected = (0.125 + 1.5 + (math.log(2) / 0.2 - 0.5)) / 2
    ce_pos = math.log(2) + math.log(3)  # box 0 label 2: log(4/2); box 1 label 1: log 3
    ce_neg = math.log(2) + math.log(4) + math.log(10 / 8) + math.log(4)
    conf_expected = (2 * ce_pos + ce_neg) / 2
    loss, loc_part, conf_part = reference_loss(ploc, plabel, gloc, glabel, dboxes)
    assert loc_part.item() == pytest.approx(loc_expected, rel=1e-5)
    assert conf_part.item() == pytest.approx(conf_expected, rel=1e-5)
    assert loss.item() == pytest.approx(loc_expected + conf_expected, rel=1e-5)


# ------------------------------------------------------------------ decode


def _probs_logits(rows):
    return torch.tensor([_logits(r) for r in rows]).t().unsqueeze(0)  # (1, C, A)


def test_decode_threshold_and_per_class_nms():
    dboxes = torch.tensor(
        [
            [0.30, 0.30, 0.2, 0.2],  # 0: class 1, 0.6
            [0.31, 0.30, 0.2, 0.2],  # 1: class 1, 0.5, IoU 0.905 with box 0 -> suppressed
            [0.30, 0.31, 0.2, 0.2],  # 2: class 2, 0.7, IoU 0.905 with box 0 -> kept
            [0.80, 0.80, 0.1, 0.1],  # 3: all foreground scores 0.04 -> dropped
            [0.80, 0.20, 0.1, 0.1],  # 4: class 1, 0.06 -> kept
            [0.40, 0.30, 0.2, 0.2],  # 5: class 1, 0.3, IoU 0.33 with box 0 -> kept
        ]
    )
    probs = [
        [0.38, 0.6, 0.02],
        [0.48, 0.5, 0.02],
        [0.28, 0.02, 0.7],
        [0.92, 0.04, 0.04],
        [0.90, 0.06, 0.04],
        [0.68, 0.3, 0.02],
    ]
    ploc = torch.zeros(1, 4, 6)
    (boxes, labels, scores), = reference_decode(ploc, _probs_logits(probs), dboxes)
    assert labels.dtype == torch.int64
    assert labels.tolist() == [2, 1, 1, 1]
    assert scores.tolist() == pytest.approx([0.7, 0.6, 0.3, 0.06], rel=1e-5)
    ltrb = default_boxes_ltrb(dboxes)
    assert torch.allclose(boxes, ltrb[[2, 0, 5, 4]], atol=1e-6)

    # max_output keeps the best ones; a 0.35 threshold also drops box 5.
    (b2, l2, s2), = reference_decode(ploc, _probs_logits(probs), dboxes, max_output=2)
    assert l2.tolist() == [2, 1] and s2.tolist() == pytest.approx([0.7, 0.6], rel=1e-5)
    (_, l3, s3), = reference_decode(ploc, _probs_logits(probs), dboxes, score_threshold=0.35)
    assert s3.tolist() == pytest.approx([0.7, 0.6], rel=1e-5)

    # Nothing above threshold: empty result.
    (b4, l4, s4), = reference_decode(ploc, _probs_logits([[0.96, 0.02, 0.02]] * 6), dboxes)
    assert b4.shape == (0, 4) and l4.numel() == 0 and s4.numel() == 0


def test_decode_inverts_box_coding_and_scale_clamp():
    dboxes = torch.tensor([[0.5, 0.5, 0.2, 0.1], [0.2, 0.2, 0.1, 0.1]])
    gt = [0.53, 0.48, 0.3, 0.05]  # centre form
    t = [
        (gt[0] - 0.5) / 0.2 / 0.1,
        (gt[1] - 0.5) / 0.1 / 0.1,
        math.log(gt[2] / 0.2) / 0.2,
        math.log(gt[3] / 0.1) / 0.2,
    ]
    ploc = torch.zeros(1, 4, 2)
    ploc[0, :, 0] = torch.tensor(t)
    ploc[0, :, 1] = torch.tensor([0.0, 0.0, 100.0, 0.0])  # 0.2*100 clamped to log(62.5)
    plabel = _probs_logits([[0.1, 0.9], [0.2, 0.8]])
    (boxes, labels, scores), = reference_decode(ploc, plabel, dboxes)
    assert labels.tolist() == [1, 1]
    expected0 = [gt[0] - gt[2] / 2, gt[1] - gt[3] / 2, gt[0] + gt[2] / 2, gt[1] + gt[3] / 2]
    assert boxes[0].tolist() == pytest.approx(expected0, abs=1e-6)
    w = 0.1 * 1000.0 / 16
    assert boxes[1].tolist() == pytest.approx([0.2 - w / 2, 0.15, 0.2 + w / 2, 0.25], rel=1e-5)
