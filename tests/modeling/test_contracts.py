"""Every setting does what it says: each key below is set to a value other than its default
and the result is compared with an independent expectation, so that code ignoring the key
fails. The expectation is the in-repo reference implementation (reference/reference_impl.py)
run with the same setting, or a case worked by hand. Each case also checks that it is
sensitive to the key (the default value would give another result).

Keys: MODEL.SSD.DEFAULT_BOX_SIZES, DEFAULT_BOX_RATIOS, IOU_THRESHOLD, BBOX_REG_WEIGHTS,
SCORE_THRESH_TEST, NMS_THRESH_TEST, NEG_POS_RATIO, HEAD_NAME; INPUT.SSD.CROP,
INPUT.SSD.COLOR_JITTER; SOLVER.BETAS. (SOLVER.CHECK_REPLICAS: tests/engine/test_replica_check.py.)

Network outputs here are random tensors (the contracts are about what follows the network);
the network itself is compared with the reference in tests/modeling/test_equivalence.py.
"""
import functools

import numpy as np
import pytest
import torch
from PIL import Image

import reference_impl as ref
from conftest import make_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

SIZE = (64, 64)
K = 3  # foreground classes
TINY = ["INPUT.FIXED_SIZE", str(SIZE), "MODEL.SSD.STRIDES", "[1, 1, 1, 1, 1, 1]",
        "MODEL.SSD.WINOGRAD", "False",
        "MODEL.SSD.NUM_CLASSES", str(K), "MODEL.RESNETS.NORM", "BN"]
SCALE = torch.tensor([SIZE[1], SIZE[0], SIZE[1], SIZE[0]], dtype=torch.float32)
# Float32 agreement of ours (pixels, batched) with the reference (normalised, per image) on
# these random cases (5 seeds each of the loss cases, 3 of the inference cases): measured
# relative loss differences <= 1.7e-7, box differences <= 1.6e-5 px, score differences
# <= 2.4e-7; the tolerances are 4x to 6x that.
LOSS_RTOL, BOX_ATOL, SCORE_ATOL = 1e-6, 1e-4, 1e-6


pytestmark = pytest.mark.usefixtures("one_thread")


@functools.lru_cache(maxsize=None)
def _build(opts):
    return build_model(make_cfg("configs/ssd_r34_shapes.yaml", *TINY, *opts)).eval()


def build(*opts):
    return _build(tuple(str(o) for o in opts))


def network_outputs(num_boxes, seed, n=3):
    """Random loc (N, R, 4) and conf (N, R, K+1) of a plausible range."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, num_boxes, 4, generator=g) * 0.7,
            torch.randn(n, num_boxes, K + 1, generator=g) * 2.0)


def ground_truth(seed, n=3):
    """Per image 1-4 boxes (pixels) and classes; image 0 has a tiny box (no default box
    reaches IoU 0.5 with it: only the forced match makes it positive)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        k = int(torch.randint(1, 5, (), generator=g))
        xy = torch.rand(k, 2, generator=g) * 40
        wh = 4 + torch.rand(k, 2, generator=g) * 30
        boxes = torch.cat([xy, (xy + wh).clamp(max=64)], 1)
        if i == 0:
            boxes = torch.cat([boxes, torch.tensor([[30.0, 30.0, 33.0, 32.0]])])
        out.append((boxes, torch.randint(0, K, (len(boxes),), generator=g)))
    return out


def to_reference_layout(loc, conf):
    """(N, R, 4), (N, R, K+1) background last -> (N, 4, R), (N, K+1, R) background first."""
    return loc.permute(0, 2, 1), torch.cat([conf[..., K:], conf[..., :K]], 2).permute(0, 2, 1)


def reference_boxes(model, scales=ref.SCALES, ratios=ref.ASPECT_RATIOS):
    return ref.reference_default_boxes(SIZE, model.head_output_sizes(), scales, ratios)


def our_losses(model, loc, conf, gts):
    anchors = model.anchor_generator(SIZE, model.head_output_sizes())
    inst = [Instances(SIZE, gt_boxes=Boxes(b), gt_classes=c) for b, c in gts]
    out = model.losses(loc, conf, anchors, inst)
    return out["loss_box_reg"].item(), out["loss_cls"].item()


def reference_losses(loc, conf, gts, dboxes, iou=0.5, neg_pos_ratio=3, scale_xy=0.1,
                     scale_wh=0.2):
    glocs, glabels = [], []
    for boxes, classes in gts:
        gloc, glabel = ref.reference_encode(boxes / SCALE, classes + 1, dboxes,
                                            iou_threshold=iou)
        glocs.append(gloc.t())
        glabels.append(glabel)
    ploc, plabel = to_reference_layout(loc, conf)
    _, loc_part, conf_part = ref.reference_loss(
        ploc, plabel, torch.stack(glocs), torch.stack(glabels), dboxes,
        neg_pos_ratio=neg_pos_ratio, scale_xy=scale_xy, scale_wh=scale_wh)
    return loc_part.item(), conf_part.item()


def assert_losses_close(ours, theirs, rtol=LOSS_RTOL):
    for name, a, b in zip(("loss_box_reg", "loss_cls"), ours, theirs):
        assert abs(a - b) <= rtol * abs(b), f"{name}: ours {a!r}, reference {b!r}"
    assert abs(sum(ours) - sum(theirs)) <= rtol * abs(sum(theirs))


def assert_differ(a, b, rtol=100 * LOSS_RTOL):
    """The case is sensitive to the key: the default value gives another loss."""
    assert any(abs(x - y) > rtol * abs(y) for x, y in zip(a, b)), (a, b)


# ---- default boxes: DEFAULT_BOX_SIZES and DEFAULT_BOX_RATIOS --------------------------------
SIZES = [30, 51, 80, 130, 170, 230, 290]
RATIOS = [[3], [2], [2, 3], [3], [2, 3], [1.5]]


def test_default_box_sizes_and_ratios_give_the_reference_boxes_and_head():
    model = build("MODEL.SSD.DEFAULT_BOX_SIZES", SIZES, "MODEL.SSD.DEFAULT_BOX_RATIOS", RATIOS)
    sizes = model.head_output_sizes()
    anchors = model.anchor_generator(SIZE, sizes)
    expected = ref.default_boxes_ltrb(reference_boxes(model, SIZES, RATIOS))
    torch.testing.assert_close(anchors / SCALE, expected, atol=1e-6, rtol=0)
    default = ref.default_boxes_ltrb(reference_boxes(model))
    assert expected.shape != default.shape or not torch.allclose(expected, default)
    # the head predicts 2 + 2 * len(ratios) boxes per location at each level
    per_level = [2 + 2 * len(r) for r in RATIOS]
    assert [c.out_channels for c in model.head.loc] == [4 * a for a in per_level]
    assert [c.out_channels for c in model.head.conf] == [(K + 1) * a for a in per_level]
    assert model.num_boxes() == sum(h * w * a for (h, w), a in zip(sizes, per_level))


def test_default_box_sizes_alone_change_the_boxes_not_their_count():
    sizes = [40, 60, 99, 153, 207, 261, 315]
    model = build("MODEL.SSD.DEFAULT_BOX_SIZES", sizes)
    anchors = model.anchor_generator(SIZE, model.head_output_sizes())
    expected = ref.default_boxes_ltrb(reference_boxes(model, sizes))
    torch.testing.assert_close(anchors / SCALE, expected, atol=1e-6, rtol=0)
    assert not torch.allclose(expected, ref.default_boxes_ltrb(reference_boxes(model)))


def test_loss_with_other_default_boxes_equals_the_reference():
    model = build("MODEL.SSD.DEFAULT_BOX_SIZES", SIZES, "MODEL.SSD.DEFAULT_BOX_RATIOS", RATIOS)
    dboxes = reference_boxes(model, SIZES, RATIOS)
    loc, conf = network_outputs(len(dboxes), seed=1)
    gts = ground_truth(seed=2)
    assert_losses_close(our_losses(model, loc, conf, gts),
                        reference_losses(loc, conf, gts, dboxes))


# ---- HEAD_NAME, and the box order of the predictions ------------------------------------------
class IndexHead(torch.nn.Module):
    """A head whose outputs are their own index in the reference's box order: loc value
    4 * r + k for coordinate k of box r, conf value (K + 1) * r + c, where within a level
    r = offset + a * h * w + y * w + x (box type, row, column; spec section 1)."""

    def __init__(self, cfg, input_shapes, num_anchors):
        super().__init__()
        self.num_anchors = list(num_anchors)
        self.k = cfg.MODEL.SSD.NUM_CLASSES + 1
        self.calls = 0

    def forward(self, features):
        self.calls += 1
        locs, confs, offset = [], [], 0
        for x, a in zip(features, self.num_anchors):
            n, _, h, w = x.shape
            r = offset + torch.arange(a * h * w, dtype=torch.float32).view(a, 1, h, w)
            locs.append((4 * r + torch.arange(4.0).view(1, 4, 1, 1)).reshape(1, a * 4, h, w)
                        .expand(n, -1, -1, -1).contiguous())
            confs.append((self.k * r + torch.arange(float(self.k)).view(1, self.k, 1, 1))
                         .reshape(1, a * self.k, h, w).expand(n, -1, -1, -1).contiguous())
            offset += a * h * w
        return locs, confs


def _register_index_head():
    from ssd_r34.modeling.head import SSD_HEAD_REGISTRY

    if "ContractIndexHead" not in SSD_HEAD_REGISTRY:
        SSD_HEAD_REGISTRY._do_register("ContractIndexHead", IndexHead)


def test_head_name_builds_that_head_and_predictions_follow_the_reference_box_order():
    _register_index_head()
    model = build("MODEL.SSD.HEAD_NAME", "ContractIndexHead",
                  "MODEL.SSD.DEFAULT_BOX_RATIOS", RATIOS)
    assert type(model.head) is IndexHead
    with torch.no_grad():
        loc, conf, anchors = model.forward_network(torch.zeros(2, 3, *SIZE))
    assert model.head.calls >= 1
    R = model.num_boxes()
    assert loc.shape == (2, R, 4) and conf.shape == (2, R, K + 1) and anchors.shape == (R, 4)
    assert torch.equal(loc[1], torch.arange(4.0 * R).view(R, 4))
    assert torch.equal(conf[1], torch.arange((K + 1.0) * R).view(R, K + 1))
    # and the default boxes come in the same order (the reference's)
    expected = ref.default_boxes_ltrb(reference_boxes(model, ratios=RATIOS))
    torch.testing.assert_close(anchors / SCALE, expected, atol=1e-6, rtol=0)


# ---- IOU_THRESHOLD, NEG_POS_RATIO, BBOX_REG_WEIGHTS in the loss --------------------------------
# (key, value, the reference's keyword for it, its default there, seed of the outputs)
LOSS_SETTINGS = [("IOU_THRESHOLD", 0.3, "iou", 0.5, 3), ("IOU_THRESHOLD", 0.7, "iou", 0.5, 3),
                 ("NEG_POS_RATIO", 1, "neg_pos_ratio", 3, 5),
                 ("NEG_POS_RATIO", 7, "neg_pos_ratio", 3, 5)]


@pytest.mark.parametrize("key,value,keyword,default,seed", LOSS_SETTINGS,
                         ids=[f"{k.lower()}-{v}" for k, v, *_ in LOSS_SETTINGS])
def test_loss_setting_matches_the_reference(key, value, keyword, default, seed):
    """IOU_THRESHOLD (the reference's encoder) and NEG_POS_RATIO (its hard negative mining):
    the losses equal the reference's with that value, and differ from its default's."""
    model = build(f"MODEL.SSD.{key}", value)
    dboxes = reference_boxes(model)
    loc, conf = network_outputs(len(dboxes), seed=seed)
    gts = ground_truth(seed=seed + 1)
    expected = reference_losses(loc, conf, gts, dboxes, **{keyword: value})
    assert_losses_close(our_losses(model, loc, conf, gts), expected)
    assert_differ(expected, reference_losses(loc, conf, gts, dboxes, **{keyword: default}))


def test_neg_pos_ratio_by_hand():
    """One positive among 6 boxes, ratio 2: the two largest-loss negatives (boxes 3 and 4)
    count, the others not."""
    model = build("MODEL.SSD.NEG_POS_RATIO", 2)
    anchors = torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.], [40., 40., 50., 50.],
                            [60., 60., 70., 70.], [80., 80., 90., 90.], [0., 80., 10., 90.]])
    gt = Instances((100, 100), gt_boxes=Boxes(torch.tensor([[0., 0., 10., 10.]])),
                   gt_classes=torch.tensor([1]))
    conf = torch.zeros(1, 6, K + 1)
    conf[0, 3, 0] = 4.0
    conf[0, 4, 0] = 3.0
    conf[0, 5, 0] = 2.0
    out = model.losses(torch.zeros(1, 6, 4), conf, anchors, [gt])
    ce = lambda i, c: -torch.log_softmax(conf[0, i], 0)[c].item()  # noqa: E731
    assert out["loss_cls"].item() == pytest.approx(ce(0, 1) + ce(3, K) + ce(4, K), rel=1e-6)
    assert out["loss_box_reg"].item() == 0.0


WEIGHTS = "(5.0, 5.0, 2.0, 2.0)"  # the reference's variances 0.2 (centre) and 0.5 (size)


def test_bbox_reg_weights_in_the_loss_match_the_reference_variances():
    model = build("MODEL.SSD.BBOX_REG_WEIGHTS", WEIGHTS)
    dboxes = reference_boxes(model)
    loc, conf = network_outputs(len(dboxes), seed=7)
    gts = ground_truth(seed=8)
    expected = reference_losses(loc, conf, gts, dboxes, scale_xy=0.2, scale_wh=0.5)
    assert_losses_close(our_losses(model, loc, conf, gts), expected)
    assert_differ(expected, reference_losses(loc, conf, gts, dboxes))


# ---- SCORE_THRESH_TEST, NMS_THRESH_TEST, BBOX_REG_WEIGHTS in inference ---------------------------
def our_detections(model, loc, conf):
    anchors = model.anchor_generator(SIZE, model.head_output_sizes())
    return model.inference(loc, conf, anchors, SIZE)


def reference_detections(model, loc, conf, **kwargs):
    ploc, plabel = to_reference_layout(loc, conf)
    return ref.reference_decode(ploc, plabel, reference_boxes(model), **kwargs)


def assert_same_detections(ours, theirs):
    for r, (boxes, labels, scores) in zip(ours, theirs, strict=True):
        assert len(r) == len(scores), (len(r), len(scores))
        torch.testing.assert_close(r.scores, scores, atol=SCORE_ATOL, rtol=0)
        assert torch.equal(r.pred_classes, labels - 1)
        torch.testing.assert_close(r.pred_boxes.tensor, boxes * SCALE, atol=BOX_ATOL, rtol=0)


def detection_counts(dets):
    return [len(d[2]) for d in dets]


# No cap on the candidates per class or the detections per image that could hide a change.
UNCAPPED = ["MODEL.SSD.TOPK_CANDIDATES_TEST", 5000, "TEST.DETECTIONS_PER_IMAGE", 5000]


@pytest.mark.parametrize("opts,kwargs", [
    (["MODEL.SSD.SCORE_THRESH_TEST", 0.2], {"score_threshold": 0.2}),
    (["MODEL.SSD.NMS_THRESH_TEST", 0.2], {"criteria": 0.2}),
    (["MODEL.SSD.NMS_THRESH_TEST", 0.8], {"criteria": 0.8}),
    (["MODEL.SSD.BBOX_REG_WEIGHTS", WEIGHTS], {"scale_xy": 0.2, "scale_wh": 0.5}),
])
def test_inference_settings_match_the_reference_decoder(opts, kwargs):
    model = build(*UNCAPPED, *opts)
    loc, conf = network_outputs(model.num_boxes(), seed=9, n=2)
    conf = conf * 0.6  # scores spread over (0, 1): several candidates per class
    expected = reference_detections(model, loc, conf, max_num=5000, max_output=5000, **kwargs)
    with torch.no_grad():
        assert_same_detections(our_detections(model, loc, conf), expected)
    at_default = reference_detections(model, loc, conf, max_num=5000, max_output=5000)
    assert detection_counts(expected) != detection_counts(at_default) or any(
        not torch.allclose(a[0], b[0]) for a, b in zip(expected, at_default))


def test_score_threshold_is_strict_by_hand():
    """Scores equal to SCORE_THRESH_TEST are dropped: uniform logits give every class 1/4,
    which is the threshold; one box has class 0 above it."""
    quarter = float(torch.softmax(torch.zeros(K + 1), 0)[0])
    assert quarter == 0.25
    model = build("MODEL.SSD.SCORE_THRESH_TEST", quarter)
    R = model.num_boxes()
    loc, conf = torch.zeros(1, R, 4), torch.zeros(1, R, K + 1)
    conf[0, 17, 0] = 2.0
    (r,) = our_detections(model, loc, conf)
    assert r.pred_classes.tolist() == [0]
    assert r.scores.tolist() == pytest.approx([np.exp(2) / (np.exp(2) + 3)])
    (boxes, labels, scores), = reference_detections(model, loc, conf, score_threshold=quarter)
    assert labels.tolist() == [1]


# ---- INPUT.SSD.CROP and INPUT.SSD.COLOR_JITTER in the training mapper ----------------------------
IMG_H, IMG_W = 80, 100
BOX = [20.0, 15.0, 70.0, 60.0]


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    """A colourful smooth RGB picture with one box: (path, uint8 array)."""
    y, x = np.mgrid[0:IMG_H, 0:IMG_W]
    img = np.stack([40 + 1.5 * x, 30 + 2 * y, 200 - x - y], axis=2)
    img = np.clip(img + 20 * np.sin(x / 5.0)[..., None], 0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("picture") / "img.png"
    Image.fromarray(img).save(path)
    return str(path), img


def mapper_for(*opts):
    from ssd_r34.data import SSDDatasetMapper

    cfg = make_cfg("configs/ssd_r34_shapes.yaml", *TINY, "INPUT.RANDOM_FLIP", "none", *opts)
    return SSDDatasetMapper(cfg, is_train=True)


def mapped(mapper, picture, seed):
    from detectron2.structures import BoxMode

    np.random.seed(seed)
    torch.manual_seed(seed)
    d = {"file_name": picture[0], "height": IMG_H, "width": IMG_W, "image_id": 0,
         "annotations": [{"bbox": BOX, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1}]}
    out = mapper(d)
    if out is None:
        return None
    return out["image"].permute(1, 2, 0).numpy(), out["instances"].gt_boxes.tensor.numpy()


def resized(img):
    """What the resize alone gives (PIL bilinear, as Detectron2's ResizeTransform)."""
    return np.asarray(Image.fromarray(img).resize((SIZE[1], SIZE[0]), Image.BILINEAR))


RESIZED_BOX = np.array(BOX) * np.array([SIZE[1] / IMG_W, SIZE[0] / IMG_H] * 2)


@pytest.mark.parametrize("crop", [False, True])
def test_crop_setting(picture, crop):
    """CROP False: never cropped (image and box of the resize alone). CROP True (the
    default): some of 20 draws are cropped, each keeping the box's centre inside."""
    mapper = mapper_for("INPUT.SSD.CROP", str(crop), "INPUT.SSD.COLOR_JITTER", "(0, 0, 0, 0)")
    plain = resized(picture[1])
    cropped = 0
    for seed in range(20):
        out = mapped(mapper, picture, seed)
        assert out is not None
        image, boxes = out
        same = np.array_equal(image, plain) and np.allclose(boxes, [RESIZED_BOX], atol=1e-4)
        cropped += not same
    if crop:
        assert cropped >= 5
    else:
        assert cropped == 0


def _grey(img):  # PIL's "L" conversion
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


def _scaled(a, b, centre):
    """b == clip(centre + f * (a - centre)) for one factor f (fitted), within 2 levels."""
    d = a - centre
    f = (d * (b - centre)).sum() / (d * d).sum()
    return np.abs(b - np.clip(centre + f * d, 0, 255)).max() <= 2


def _brightness_kept(a, b):  # brightness f: every pixel times f (a blend with black)
    return _scaled(a, b, 0.0)


def _contrast_kept(a, b):  # contrast f: deviations from the grey mean times f
    return _scaled(a, b, float(int(_grey(a).mean() + 0.5)))


def _grey_kept(a, b):  # saturation: a blend with the grey picture, which stays
    return np.abs(_grey(b) - _grey(a)).max() <= 2


def _value_kept(a, b):  # hue: a rotation in HSV, the value (max over channels) stays
    return np.abs(b.max(2) - a.max(2)).max() <= 2


JITTER_CASES = {"brightness": ("(0.5, 0, 0, 0)", _brightness_kept),
                "contrast": ("(0, 0.5, 0, 0)", _contrast_kept),
                "saturation": ("(0, 0, 0.5, 0)", _grey_kept),
                "hue": ("(0, 0, 0, 0.2)", _value_kept)}


@pytest.mark.parametrize("component", sorted(JITTER_CASES))
def test_colour_jitter_setting_jitters_that_component_only(picture, component):
    """Each component of COLOR_JITTER alone changes every draw differently, and keeps what
    that component keeps (worked out from the definitions of the four adjustments); all
    four at zero leave the resized picture as it is."""
    value, keeps = JITTER_CASES[component]
    mapper = mapper_for("INPUT.SSD.CROP", "False", "INPUT.SSD.COLOR_JITTER", value)
    plain = resized(picture[1]).astype(np.float64)
    images = [mapped(mapper, picture, seed)[0].astype(np.float64) for seed in range(4)]
    for img in images:
        assert np.abs(img - plain).mean() > 0.3, "not jittered"
        assert keeps(plain, img), f"{component} jitter changed more than {component}"
    assert len({img.tobytes() for img in images}) == 4  # a new draw each time
    off = mapper_for("INPUT.SSD.CROP", "False", "INPUT.SSD.COLOR_JITTER", "(0, 0, 0, 0)")
    assert np.array_equal(mapped(off, picture, 0)[0], plain.astype(np.uint8))


# ---- SOLVER.BETAS ---------------------------------------------------------------------------
def test_adamw_betas_by_hand():
    """Two AdamW steps on one parameter with known gradients, against the update written
    out (Loshchilov & Hutter; bias-corrected moments): the second step depends on both
    betas."""
    from ssd_r34.engine import SSDTrainer

    b1, b2, lr, eps = 0.5, 0.75, 0.1, 1e-8
    cfg = make_cfg("configs/ssd_r34_shapes.yaml", "SOLVER.OPTIMIZER", "AdamW", "SOLVER.BETAS",
                   f"({b1}, {b2})", "SOLVER.BASE_LR", str(lr), "SOLVER.WEIGHT_DECAY", "0.0",
                   "SOLVER.WEIGHT_DECAY_NORM", "0.0")
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    opt = SSDTrainer.build_optimizer(cfg, model)
    grads = [0.2, -1.0]
    for g in grads:
        model.weight.grad = torch.full_like(model.weight, g)
        opt.step()
    p, m, v = 1.0, 0.0, 0.0
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p -= lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)) ** 0.5 + eps)
    assert model.weight.item() == pytest.approx(p, rel=1e-6)
    # with the default betas (0.9, 0.999) the result differs
    q, m, v = 1.0, 0.0, 0.0
    for t, g in enumerate(grads, 1):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        q -= lr * (m / (1 - 0.9 ** t)) / ((v / (1 - 0.999 ** t)) ** 0.5 + eps)
    assert abs(p - q) > 1e-3
