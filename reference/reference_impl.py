"""Independent, plain re-implementation of the MLPerf SSD-ResNet34 reference.

Written from the MLPerf references alone (mlcommons/training ``single_stage_detector/ssd``:
default boxes, encoder, loss; mlcommons/inference ``models/ssd_r34.py``: the model), for two
uses:

* equivalence tests that compare the Detectron2 implementation (``ssd_r34``) with it;
* the slow baseline in benchmarks.

It deliberately imports nothing from ``ssd_r34`` or detectron2. Readability is preferred
over speed: matching, default boxes and NMS are Python loops, as in the reference.

Conventions (as in the reference):

* boxes are normalised to [0, 1] of the (resized) image, x relative to W, y to H;
* "xywh" is centre form (cx, cy, w, h), "ltrb" is corner form (x0, y0, x1, y1);
* per-image default boxes are laid out level by level, inside a level by
  ``a*h*w + y*w + x`` (box type, row, column);
* class 0 is background, classes 1..C-1 are foreground.

Public API::

    ReferenceSSDR34(num_classes=81, strides=(1, 1, 2, 2, 2, 1))   # nn.Module
        .forward(x) -> (locs (N, 4, A), confs (N, num_classes, A))
        .head_output_sizes(image_size) -> [(h, w)] * 6
    reference_default_boxes(image_size, feature_sizes, scales=SCALES,
                            aspect_ratios=ASPECT_RATIOS) -> (A, 4) float32 xywh
    default_boxes_ltrb(dboxes_xywh) -> (A, 4) ltrb
    calc_iou_tensor(box1, box2) -> (N, M)
    reference_encode(gt_ltrb, gt_labels, dboxes_xywh, iou_threshold=0.5)
        -> (loc_target (A, 4) xywh, labels (A,) int64)
    reference_loss(ploc, plabel, gloc, glabel, dboxes_xywh, neg_pos_ratio=3,
                   scale_xy=SCALE_XY, scale_wh=SCALE_WH)
        -> (loss, loc_part, conf_part)
    reference_decode(ploc, plabel, dboxes_xywh, criteria=0.5, max_output=200,
                     max_num=200, score_threshold=0.05,
                     scale_clamp=math.log(1000.0 / 16), scale_xy=SCALE_XY,
                     scale_wh=SCALE_WH)
        -> [(boxes_ltrb (K, 4), labels (K,) int64, scores (K,))] per image
"""

import itertools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

__all__ = [
    "NUM_DEFAULTS",
    "SCALES",
    "ASPECT_RATIOS",
    "SCALE_XY",
    "SCALE_WH",
    "ReferenceSSDR34",
    "reference_default_boxes",
    "default_boxes_ltrb",
    "calc_iou_tensor",
    "reference_encode",
    "reference_loss",
    "reference_decode",
]

# Boxes per location, per detection source (spec section 1).
NUM_DEFAULTS = [4, 6, 6, 6, 4, 4]
# Source channels (spec section 1).
OUT_CHANNELS = [256, 512, 512, 256, 256, 256]
# Extra blocks: middle channels (spec section 1 table).
MID_CHANNELS = [256, 256, 128, 128, 128]
# Default box scales, defined for 300 pixels (spec section 3).
SCALES = [21, 45, 99, 153, 207, 261, 315]
# Aspect ratios per level (spec section 3).
ASPECT_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
# Box coding variances (spec section 4): offsets are divided by these.
SCALE_XY = 0.1
SCALE_WH = 0.2


# --------------------------------------------------------------------------------------
# 1. Network
# --------------------------------------------------------------------------------------


class _ReferenceResNet34(nn.Module):
    """ResNet-34 truncated after layer3; layer3's first block has stride 1.

    ``layer1`` = Sequential(conv1, bn1, relu, maxpool, layer1, layer2) of torchvision,
    ``layer2`` = Sequential(layer3). That gives the state-dict keys of spec section 2
    (``model.layer1.4.*``, ``model.layer1.5.*``, ``model.layer2.0.{0..5}.*``).
    """

    def __init__(self):
        super().__init__()
        rn34 = torchvision.models.resnet34(weights=None)
        children = list(rn34.children())
        # children: conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4, avgpool, fc
        self.layer1 = nn.Sequential(*children[:6])
        self.layer2 = nn.Sequential(*children[6:7])
        first_block = self.layer2[0][0]
        first_block.conv1.stride = (1, 1)
        first_block.downsample[0].stride = (1, 1)

    def forward(self, x):
        x = self.layer1(x)
        x = self.layer2(x)
        return x


class ReferenceSSDR34(nn.Module):
    """The reference SSD-ResNet34 detector network (spec sections 1 and 2).

    ``num_classes`` includes the background class (81 for COCO). ``strides`` are the
    seed's 6 strides: s0 (loc heads), s1 (conf heads), s2..s5 (3x3 convs of extra blocks
    0..3; block 4 always has stride 1).
    """

    def __init__(self, num_classes=81, strides=(1, 1, 2, 2, 2, 1)):
        super().__init__()
        strides = tuple(int(s) for s in strides)
        if len(strides) != 6:
            raise ValueError("strides must have 6 entries, got %r" % (strides,))
        if strides[0] != strides[1]:
            raise ValueError(
                "loc and conf head strides (s0, s1) must be equal, got %r" % (strides,)
            )
        self.num_classes = int(num_classes)
        self.strides = strides
        self.num_defaults = list(NUM_DEFAULTS)
        self.out_chan = list(OUT_CHANNELS)

        self.model = _ReferenceResNet34()

        # Extra blocks (spec section 1 table).
        blocks = []
        for i, (cin, cout, mid) in enumerate(
            zip(self.out_chan[:-1], self.out_chan[1:], MID_CHANNELS)
        ):
            if i < 3:
                stride, padding = strides[2 + i], 1
            elif i == 3:
                stride, padding = strides[5], 0
            else:
                stride, padding = 1, 0
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(cin, mid, kernel_size=1, bias=True),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(mid, cout, kernel_size=3, stride=stride, padding=padding, bias=True),
                    nn.ReLU(inplace=True),
                )
            )
        self.additional_blocks = nn.ModuleList(blocks)

        # Heads.
        loc, conf = [], []
        for nd, c in zip(self.num_defaults, self.out_chan):
            loc.append(nn.Conv2d(c, nd * 4, kernel_size=3, padding=1, stride=strides[0]))
            conf.append(
                nn.Conv2d(c, nd * self.num_classes, kernel_size=3, padding=1, stride=strides[1])
            )
        self.loc = nn.ModuleList(loc)
        self.conf = nn.ModuleList(conf)

        # Xavier-uniform on weights (dim > 1) of extras and heads; biases keep the default.
        for layer in itertools.chain(self.additional_blocks, self.loc, self.conf):
            for param in layer.parameters():
                if param.dim() > 1:
                    nn.init.xavier_uniform_(param)

    def sources(self, x):
        """The 6 detection sources (backbone output, then the 5 extra block outputs)."""
        x = self.model(x)
        srcs = [x]
        for block in self.additional_blocks:
            x = block(x)
            srcs.append(x)
        return srcs

    def forward(self, x):
        srcs = self.sources(x)
        n = x.size(0)
        locs, confs = [], []
        for s, l, c in zip(srcs, self.loc, self.conf):
            # (N, nd*4, h, w) -> (N, 4, nd*h*w): channel k*nd + a is coordinate k of box a.
            locs.append(l(s).view(n, 4, -1))
            # (N, nd*C, h, w) -> (N, C, nd*h*w): channel c*nd + a is class c of box a.
            confs.append(c(s).view(n, self.num_classes, -1))
        locs = torch.cat(locs, dim=2).contiguous()
        confs = torch.cat(confs, dim=2).contiguous()
        return locs, confs

    def head_output_sizes(self, image_size):
        """(h, w) of the 6 head outputs for an H x W input, measured by a zero forward.

        ``image_size`` is an int (square) or (H, W). Runs in eval mode (so BatchNorm
        running statistics are not touched) and restores the training flag afterwards.
        """
        h_img, w_img = _hw(image_size)
        was_training = self.training
        self.eval()
        try:
            p = next(self.parameters())
            with torch.no_grad():
                x = torch.zeros(1, 3, h_img, w_img, dtype=p.dtype, device=p.device)
                srcs = self.sources(x)
                sizes = []
                for s, l in zip(srcs, self.loc):
                    out = l(s)
                    sizes.append((int(out.shape[2]), int(out.shape[3])))
        finally:
            self.train(was_training)
        return sizes


def _hw(image_size):
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


# --------------------------------------------------------------------------------------
# 3. Default boxes
# --------------------------------------------------------------------------------------


def reference_default_boxes(image_size, feature_sizes, scales=SCALES,
                            aspect_ratios=ASPECT_RATIOS):
    """Default boxes (A, 4), float32, normalised centre form, clamped to [0, 1].

    ``image_size``: int or (H, W). ``feature_sizes``: the 6 head output sizes, each an
    int (square) or (h, w). Computed in Python floats (float64), converted to float32
    at the end, then clamped (all four numbers, w and h included). ``scales`` (one more
    than the levels) and ``aspect_ratios`` (per level) default to the reference's.
    """
    h_img, w_img = _hw(image_size)
    boxes = []
    for l, fs in enumerate(feature_sizes):
        h_l, w_l = _hw(fs)
        step_h = int(h_img / h_l)
        step_w = int(w_img / w_l)
        fk_h = h_img // step_h
        fk_w = w_img // step_w

        sk1 = int(scales[l] * h_img / 300) / h_img
        sk2 = int(scales[l + 1] * w_img / 300) / w_img
        sk3 = math.sqrt(sk1 * sk2)
        sizes = [(sk1, sk1), (sk3, sk3)]
        for r in aspect_ratios[l]:
            w = sk1 * math.sqrt(r)
            h = sk1 / math.sqrt(r)
            sizes.append((w, h))
            sizes.append((h, w))

        for w, h in sizes:
            for y in range(h_l):
                for x in range(w_l):
                    cx = (x + 0.5) / fk_w
                    cy = (y + 0.5) / fk_h
                    boxes.append((cx, cy, w, h))

    dboxes = torch.tensor(boxes, dtype=torch.float64).to(torch.float32)
    dboxes = dboxes.clamp(min=0.0, max=1.0)
    return dboxes


def default_boxes_ltrb(dboxes_xywh):
    """Corner form of (clamped) centre-form default boxes; may extend outside [0, 1]."""
    d = dboxes_xywh
    out = torch.empty_like(d)
    out[:, 0] = d[:, 0] - 0.5 * d[:, 2]
    out[:, 1] = d[:, 1] - 0.5 * d[:, 3]
    out[:, 2] = d[:, 0] + 0.5 * d[:, 2]
    out[:, 3] = d[:, 1] + 0.5 * d[:, 3]
    return out


# --------------------------------------------------------------------------------------
# IoU
# --------------------------------------------------------------------------------------


def calc_iou_tensor(box1, box2):
    """IoU of corner-form boxes: (N, 4) x (M, 4) -> (N, M)."""
    n = box1.size(0)
    m = box2.size(0)
    be1 = box1.unsqueeze(1).expand(n, m, 4)
    be2 = box2.unsqueeze(0).expand(n, m, 4)

    lt = torch.max(be1[:, :, :2], be2[:, :, :2])
    rb = torch.min(be1[:, :, 2:], be2[:, :, 2:])
    delta = (rb - lt).clamp(min=0)
    intersect = delta[:, :, 0] * delta[:, :, 1]

    delta1 = be1[:, :, 2:] - be1[:, :, :2]
    area1 = delta1[:, :, 0] * delta1[:, :, 1]
    delta2 = be2[:, :, 2:] - be2[:, :, :2]
    area2 = delta2[:, :, 0] * delta2[:, :, 1]

    return intersect / (area1 + area2 - intersect)


# --------------------------------------------------------------------------------------
# 5. Matching
# --------------------------------------------------------------------------------------


def reference_encode(gt_ltrb, gt_labels, dboxes_xywh, iou_threshold=0.5):
    """Match one image's ground truths to the default boxes (spec section 5).

    Returns ``(loc_target, labels)``: ``loc_target`` (A, 4) is the matched ground-truth
    box in normalised centre form for positives (for background boxes: the default box
    itself, via the corner round trip, as the reference does; the loss ignores them);
    ``labels`` (A,) int64, 0 for background.
    """
    dboxes_ltrb = default_boxes_ltrb(dboxes_xywh)
    num_gt = gt_ltrb.size(0)
    num_boxes = dboxes_ltrb.size(0)
    gt_labels = gt_labels.to(torch.int64)

    labels = torch.zeros(num_boxes, dtype=torch.int64)
    boxes_out = dboxes_ltrb.clone()
    if num_gt > 0:
        ious = calc_iou_tensor(gt_ltrb.to(dboxes_ltrb.dtype), dboxes_ltrb)  # (G, A)
        iou_list = ious.tolist()

        # Best ground truth per default box (first on ties).
        best_iou = []
        best_gt = []
        for a in range(num_boxes):
            bi, bj = iou_list[0][a], 0
            for j in range(1, num_gt):
                if iou_list[j][a] > bi:
                    bi, bj = iou_list[j][a], j
            best_iou.append(bi)
            best_gt.append(bj)

        # Best default box per ground truth (first on ties).
        best_box = []
        for j in range(num_gt):
            row = iou_list[j]
            ba, bv = 0, row[0]
            for a in range(1, num_boxes):
                if row[a] > bv:
                    ba, bv = a, row[a]
            best_box.append(ba)

        # Force those boxes; a later ground truth overrides an earlier one.
        for j in range(num_gt):
            best_iou[best_box[j]] = 2.0
            best_gt[best_box[j]] = j

        for a in range(num_boxes):
            if best_iou[a] > iou_threshold:
                j = best_gt[a]
                labels[a] = gt_labels[j]
                boxes_out[a] = gt_ltrb[j].to(boxes_out.dtype)

    loc_target = torch.empty_like(boxes_out)
    loc_target[:, 0] = 0.5 * (boxes_out[:, 0] + boxes_out[:, 2])
    loc_target[:, 1] = 0.5 * (boxes_out[:, 1] + boxes_out[:, 3])
    loc_target[:, 2] = -boxes_out[:, 0] + boxes_out[:, 2]
    loc_target[:, 3] = -boxes_out[:, 1] + boxes_out[:, 3]
    return loc_target, labels


# --------------------------------------------------------------------------------------
# 4 and 6. Box coding and loss
# --------------------------------------------------------------------------------------


def _encode_offsets(gloc, dboxes_xywh, scale_xy=SCALE_XY, scale_wh=SCALE_WH):
    """(N, 4, A) centre-form boxes -> (N, 4, A) offsets (tx, ty, tw, th) of spec §4."""
    d = dboxes_xywh.t().unsqueeze(0).to(gloc.dtype)  # (1, 4, A)
    txy = (gloc[:, :2, :] - d[:, :2, :]) / d[:, 2:, :] / scale_xy
    twh = (gloc[:, 2:, :] / d[:, 2:, :]).log() / scale_wh
    return torch.cat((txy, twh), dim=1)


def reference_loss(ploc, plabel, gloc, glabel, dboxes_xywh, neg_pos_ratio=3,
                   scale_xy=SCALE_XY, scale_wh=SCALE_WH):
    """Reference SSD loss (spec section 6) -> ``(loss, loc_part, conf_part)``.

    ploc (N, 4, A) predicted offsets; plabel (N, C, A) logits; gloc (N, 4, A) matched
    ground-truth boxes in normalised centre form; glabel (N, A) int64 (0 = background).
    ``loss = loc_part + conf_part``, each a batch mean of per-image sums divided by the
    image's positive count (0 for images without positives). ``neg_pos_ratio`` (hard
    negatives per positive) and the box coding variances ``scale_xy`` / ``scale_wh`` default
    to the reference's 3, 0.1 and 0.2.
    """
    glabel = glabel.to(torch.int64)
    mask = glabel > 0  # (N, A)
    pos_num = mask.sum(dim=1)  # (N,)

    vec_gd = _encode_offsets(gloc, dboxes_xywh, scale_xy, scale_wh)
    sl1 = F.smooth_l1_loss(ploc, vec_gd, reduction="none", beta=1.0).sum(dim=1)  # (N, A)
    sl1 = (mask.float() * sl1).sum(dim=1)  # (N,)

    con = F.cross_entropy(plabel, glabel, reduction="none")  # (N, A)

    # Hard negative mining: the MLPerf reference's double sort, verbatim.
    con_neg = con.clone()
    con_neg[mask] = 0
    _, con_idx = con_neg.sort(dim=1, descending=True)
    _, con_rank = con_idx.sort(dim=1)
    neg_num = torch.clamp(neg_pos_ratio * pos_num, max=mask.size(1)).unsqueeze(-1)
    neg_mask = con_rank < neg_num
    closs = (con * (mask.float() + neg_mask.float())).sum(dim=1)  # (N,)

    num_mask = (pos_num > 0).float()
    pos_num_f = pos_num.float().clamp(min=1e-6)
    loc_part = (sl1 * num_mask / pos_num_f).mean(dim=0)
    conf_part = (closs * num_mask / pos_num_f).mean(dim=0)
    total = sl1 + closs
    loss = (total * num_mask / pos_num_f).mean(dim=0)
    return loss, loc_part, conf_part


# --------------------------------------------------------------------------------------
# 7. Inference
# --------------------------------------------------------------------------------------


def _decode_boxes(ploc, dboxes_xywh, scale_clamp, scale_xy=SCALE_XY, scale_wh=SCALE_WH):
    """(N, 4, A) offsets -> (N, A, 4) normalised corner boxes."""
    d = dboxes_xywh.to(ploc.dtype).unsqueeze(0)  # (1, A, 4)
    t = ploc.permute(0, 2, 1)  # (N, A, 4)
    cx = d[:, :, 0] + scale_xy * t[:, :, 0] * d[:, :, 2]
    cy = d[:, :, 1] + scale_xy * t[:, :, 1] * d[:, :, 3]
    w = d[:, :, 2] * torch.exp(torch.clamp(scale_wh * t[:, :, 2], max=scale_clamp))
    h = d[:, :, 3] * torch.exp(torch.clamp(scale_wh * t[:, :, 3], max=scale_clamp))
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=2)


def _decode_single(bboxes_in, scores_in, criteria, max_output, max_num, score_threshold):
    """One image: bboxes_in (A, 4) ltrb, scores_in (A, C) probabilities."""
    bboxes_out, scores_out, labels_out = [], [], []
    num_classes = scores_in.size(1)
    for i in range(1, num_classes):
        score = scores_in[:, i]
        mask = score > score_threshold
        bboxes, score = bboxes_in[mask, :], score[mask]
        if score.size(0) == 0:
            continue

        _, score_idx_sorted = score.sort(dim=0)  # ascending
        score_idx_sorted = score_idx_sorted[-max_num:]
        candidates = []
        while score_idx_sorted.numel() > 0:
            idx = score_idx_sorted[-1].item()
            bboxes_sorted = bboxes[score_idx_sorted, :]
            bboxes_idx = bboxes[idx, :].unsqueeze(dim=0)
            iou_sorted = calc_iou_tensor(bboxes_sorted, bboxes_idx).squeeze(1)
            # The taken box has IoU 1 with itself, so it leaves the list too.
            score_idx_sorted = score_idx_sorted[iou_sorted < criteria]
            candidates.append(idx)

        bboxes_out.append(bboxes[candidates, :])
        scores_out.append(score[candidates])
        labels_out.extend([i] * len(candidates))

    if not bboxes_out:
        return (
            bboxes_in.new_zeros((0, 4)),
            torch.zeros(0, dtype=torch.int64),
            scores_in.new_zeros((0,)),
        )
    bboxes_out = torch.cat(bboxes_out, dim=0)
    labels_out = torch.tensor(labels_out, dtype=torch.int64)
    scores_out = torch.cat(scores_out, dim=0)

    _, max_ids = scores_out.sort(dim=0)  # ascending, as in the reference
    max_ids = max_ids[-max_output:]
    max_ids = max_ids.flip(0)  # descending score
    return bboxes_out[max_ids, :], labels_out[max_ids], scores_out[max_ids]


def reference_decode(
    ploc,
    plabel,
    dboxes_xywh,
    criteria=0.5,
    max_output=200,
    max_num=200,
    score_threshold=0.05,
    scale_clamp=math.log(1000.0 / 16),
    scale_xy=SCALE_XY,
    scale_wh=SCALE_WH,
):
    """Reference post-processing (spec section 7) for a batch.

    ploc (N, 4, A) offsets, plabel (N, C, A) logits. Returns a list over images of
    ``(boxes_ltrb (K, 4) normalised and unclipped, labels (K,) int64 in 1..C-1,
    scores (K,))`` sorted by descending score. ``criteria`` is the NMS IoU threshold,
    ``score_threshold`` the strict lower bound on class scores, ``scale_xy`` / ``scale_wh``
    the box coding variances.
    """
    with torch.no_grad():
        boxes = _decode_boxes(ploc, dboxes_xywh, scale_clamp, scale_xy, scale_wh)  # (N, A, 4)
        probs = F.softmax(plabel.permute(0, 2, 1), dim=-1)  # (N, A, C)
        results = []
        for n in range(ploc.size(0)):
            results.append(
                _decode_single(
                    boxes[n], probs[n], criteria, max_output, max_num, score_threshold
                )
            )
    return results


def randomise_batchnorm(model, seed=0):
    """Give every BatchNorm2d of ``model`` non-trivial affine weights and running statistics
    (a test and benchmark utility: random weights with BN at its defaults are too easy)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.4 * torch.rand(c, generator=g) - 0.2)
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))


def scale_heads(model, x, largest=15.0):
    """Scale the loc/conf heads of an ssd_r34 ``model`` so that the largest |logit| and |box
    delta| on the normalised images ``x`` are about ``largest``, a trained model's range
    (random weights give hundreds, which makes every softmax one-hot). Returns ``model``."""
    with torch.no_grad():
        loc, conf, _ = model.forward_network(x)
        for convs, out in ((model.head.conf, conf), (model.head.loc, loc)):
            f = largest / out.abs().max().item()
            for conv in convs:
                conv.weight.mul_(f)
                conv.bias.mul_(f)
    return model
