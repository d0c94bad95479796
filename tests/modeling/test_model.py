"""The network, default boxes, matching, loss and inference against the spec."""
import math
import os

import pytest
import torch

import reference_impl as ref
from conftest import ROOT, make_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from ssd_r34.modeling.box_ops import match_default_boxes

CASES = [  # config, size, strides, head output sizes, boxes (spec section 1)
    ("configs/ssd_r34_300.yaml", (300, 300), [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)], 8732),
    ("configs/ssd_r34_1200.yaml", (1200, 1200), [(50, 50), (25, 25), (13, 13), (7, 7), (3, 3), (3, 3)], 15130),
    ("configs/ssd_r34_800x1200.yaml", (800, 1200),
     [(50, 75), (25, 38), (13, 19), (13, 19), (12, 18), (11, 17)], 25276),
]


def build(config="configs/ssd_r34_300.yaml", *opts):
    return build_model(make_cfg(config, "MODEL.RESNETS.NORM", "BN", *opts))


@pytest.mark.parametrize("config,size,sizes,boxes", CASES)
def test_box_counts_from_configs(config, size, sizes, boxes):
    model = build(config)
    assert tuple(model.input_size) == size
    assert model.head_output_sizes() == sizes
    assert model.num_boxes() == boxes


def test_parameter_count_and_module_names():
    model = build()
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - 19.97) < 0.01
    names = set(model.state_dict())
    for key in ["backbone.stem.conv1.weight", "backbone.stem.conv1.norm.running_var",
                "backbone.res2.0.conv1.norm.weight", "backbone.res3.0.shortcut.weight",
                "backbone.res4.0.shortcut.norm.bias", "backbone.res4.5.conv2.weight",
                "backbone.extra4.conv2.bias", "head.loc.5.weight", "head.conf.0.bias"]:
        assert key in names
    assert model.backbone.res4[0].stride == 1


@pytest.mark.parametrize("config,size,sizes,boxes", CASES)
def test_default_boxes_match_independent_computation(config, size, sizes, boxes):
    model = build(config)
    anchors = model.anchor_generator(size, sizes)
    expected = ref.default_boxes_ltrb(ref.reference_default_boxes(size, sizes))
    H, W = size
    assert anchors.shape == (boxes, 4)
    torch.testing.assert_close(anchors / torch.tensor([W, H, W, H]), expected, atol=1e-6, rtol=0)
    # cached per size: the same tensor comes back
    assert model.anchor_generator(size, sizes) is anchors


def _reference_match(gt, anchors, size):
    H, W = size
    scale = torch.tensor([W, H, W, H])
    c = anchors / scale
    dboxes = torch.stack([(c[:, 0] + c[:, 2]) / 2, (c[:, 1] + c[:, 3]) / 2,
                          c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]], 1)
    _, labels = ref.reference_encode(gt / scale, torch.arange(1, len(gt) + 1), dboxes)
    return labels


def test_matching_forced_box_goes_to_the_later_ground_truth():
    size = (300, 300)
    model = build()
    anchors = model.anchor_generator(size, CASES[0][2])
    # two ground truths whose best default box is box 4000: the first is that box, the
    # second a slightly smaller copy (so the box's own best ground truth is the first).
    a = anchors[4000]
    gt = torch.stack([a, a + torch.tensor([0.5, 0.5, -0.5, -0.5]),
                      torch.tensor([50., 60., 200., 180.])])
    matched, positive = match_default_boxes(gt[None], torch.ones(1, 3, dtype=torch.bool),
                                            anchors, 0.5)
    from detectron2.structures import pairwise_iou
    best = pairwise_iou(Boxes(gt), Boxes(anchors)).argmax(dim=1)
    assert best[0] == best[1]
    assert best[0] == 4000
    assert positive[0, 4000] and matched[0, 4000] == 1  # the later one wins
    labels = _reference_match(gt, anchors, size)
    ours = torch.where(positive[0], matched[0] + 1, torch.zeros_like(matched[0]))
    assert torch.equal(ours, labels)


def test_matching_equals_reference_on_random_boxes():
    size = (300, 300)
    anchors = build().anchor_generator(size, CASES[0][2])
    g = torch.Generator().manual_seed(0)
    for n in [1, 3, 8]:
        xy = torch.rand(n, 2, generator=g) * 250
        wh = torch.rand(n, 2, generator=g) * 120 + 5
        gt = torch.cat([xy, (xy + wh).clamp(max=300)], 1)
        matched, positive = match_default_boxes(gt[None], torch.ones(1, n, dtype=torch.bool),
                                                anchors, 0.5)
        ours = torch.where(positive[0], matched[0] + 1, torch.zeros_like(matched[0]))
        assert torch.equal(ours, _reference_match(gt, anchors, size))
        assert positive.sum() >= n


def test_loss_small_case_by_hand():
    """Two default boxes, one ground truth: box 0 positive, box 1 the one negative."""
    model = build("configs/ssd_r34_300.yaml", "MODEL.SSD.NUM_CLASSES", "2")
    anchors = torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.], [40., 40., 50., 50.],
                            [60., 60., 70., 70.], [80., 80., 90., 90.]])
    gt = Instances((100, 100), gt_boxes=Boxes(torch.tensor([[1., 0., 11., 10.]])),
                   gt_classes=torch.tensor([1]))
    loc = torch.zeros(1, 5, 4)
    loc[0, 0] = torch.tensor([0.5, 0.0, 0.0, 0.0])  # target (1, 0, 0, 0): |diff| = 0.5
    conf = torch.zeros(1, 5, 3)  # classes 0, 1, background 2
    conf[0, 0] = torch.tensor([0., 2., 0.])
    conf[0, 3] = torch.tensor([3., 0., 0.])  # the hardest negative
    conf[0, 4] = torch.tensor([1., 0., 0.])
    losses = model.losses(loc, conf, anchors, [gt])
    loc_expected = 0.5 * 0.5 ** 2  # smooth L1, beta 1
    ce = lambda logits, c: -torch.log_softmax(logits, 0)[c].item()  # noqa: E731
    # P = 1, k = 3 negatives: boxes 3 (ce 3.1), 4 (ce 1.55) and then one of 1/2 (ce log 3)
    conf_expected = ce(conf[0, 0], 1) + ce(conf[0, 3], 2) + ce(conf[0, 4], 2) + math.log(3)
    assert losses["loss_box_reg"].item() == pytest.approx(loc_expected, rel=1e-6)
    assert losses["loss_cls"].item() == pytest.approx(conf_expected, rel=1e-6)
    # an image with no positive counts as 0 in the mean over images
    empty = Instances((100, 100), gt_boxes=Boxes(torch.zeros(0, 4)),
                      gt_classes=torch.zeros(0, dtype=torch.long))
    both = model.losses(loc.repeat(2, 1, 1), conf.repeat(2, 1, 1), anchors, [gt, empty])
    assert both["loss_cls"].item() == pytest.approx(conf_expected / 2, rel=1e-6)


def test_inference_threshold_topk_and_nms():
    model = build("configs/ssd_r34_300.yaml", "MODEL.SSD.NUM_CLASSES", "2",
                  "MODEL.SSD.TOPK_CANDIDATES_TEST", "3", "TEST.DETECTIONS_PER_IMAGE", "4")
    anchors = torch.tensor([[0., 0., 10., 10.], [1., 0., 11., 10.], [50., 50., 60., 60.],
                            [80., 80., 90., 90.], [20., 20., 30., 30.], [40., 0., 50., 10.]])
    loc = torch.zeros(1, 6, 4)
    logit = lambda p: math.log(p)  # noqa: E731
    probs = torch.tensor([[0.90, 0.05, 0.05],   # class 0 high
                          [0.80, 0.15, 0.05],   # overlaps box 0 (IoU 0.82): suppressed in class 0
                          [0.04, 0.90, 0.06],   # class 0 under threshold; class 1 high
                          [0.70, 0.20, 0.10],   # class 0, 3rd best
                          [0.60, 0.30, 0.10],   # class 0, 4th best: beyond top-3 for class 0
                          [0.02, 0.06, 0.92]])  # class 1 just over 0.05
    conf = probs.log()[None]
    (r,) = model.inference(loc, conf, anchors, (100, 100))
    got = sorted(zip(r.pred_classes.tolist(), [round(s, 4) for s in r.scores.tolist()]))
    # class 0: top-3 of {0.9, 0.8, 0.7, 0.6} -> {0.9, 0.8, 0.7}; NMS drops 0.8.
    # class 1: top-3 of {0.15, 0.9, 0.2, 0.3, 0.06} -> {0.9, 0.3, 0.2}; no overlaps.
    # best 4 overall: 0.9 (c0), 0.9 (c1), 0.7 (c0), 0.3 (c1)
    assert got == sorted([(0, 0.9), (1, 0.9), (0, 0.7), (1, 0.3)])
    assert r.scores.tolist() == sorted(r.scores.tolist(), reverse=True)


@pytest.mark.parametrize("opts,match", [
    (["MODEL.SSD.STRIDES", "[2, 1, 2, 2, 2, 1]"], "loc stride"),
    (["MODEL.SSD.STRIDES", "[1, 1, 2, 2]"], "six positive integers"),
    (["MODEL.SSD.STRIDES", "[1, 1, 0, 2, 2, 1]"], "six positive integers"),
    (["INPUT.FIXED_SIZE", "(64, 64)", "MODEL.SSD.STRIDES", "[3, 3, 2, 2, 2, 2]"], "too small"),
])
def test_invalid_strides_and_sizes_fail_clearly(opts, match):
    with pytest.raises(ValueError, match=match) as e:
        build("configs/ssd_r34_300.yaml", *opts)
    assert "MODEL.SSD.STRIDES" in str(e.value)


def test_size_probe_leaves_batchnorm_statistics_alone():
    model = build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.training
    model.num_boxes((300, 300))
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_detections_per_image_is_detectron2s_key_and_the_old_one_is_unknown(tmp_path):
    assert build("configs/ssd_r34_300.yaml").max_detections_per_image == 200
    assert build("configs/ssd_r34_300.yaml", "TEST.DETECTIONS_PER_IMAGE",
                 "7").max_detections_per_image == 7
    # The removed MODEL.SSD.DETECTIONS_PER_IMAGE gets Detectron2's usual unknown-key error,
    # from a command line and from a config file.
    with pytest.raises(AssertionError, match="Non-existent key: MODEL.SSD.DETECTIONS_PER_IMAGE"):
        make_cfg("configs/ssd_r34_300.yaml", "MODEL.SSD.DETECTIONS_PER_IMAGE", "9")
    old = tmp_path / "old.yaml"
    old.write_text("_BASE_: %s\nMODEL:\n  SSD:\n    DETECTIONS_PER_IMAGE: 9\n"
                   % os.path.join(ROOT, "configs", "ssd_r34_300.yaml"))
    with pytest.raises(KeyError, match="Non-existent config key: MODEL.SSD.DETECTIONS_PER_IMAGE"):
        make_cfg(str(old))


def test_resnet_depth_other_than_34_is_refused():
    with pytest.raises(ValueError, match="MODEL.RESNETS.DEPTH 50.*set MODEL.RESNETS.DEPTH 34"):
        build("configs/ssd_r34_300.yaml", "MODEL.RESNETS.DEPTH", "50")


def test_dense_detector_forward_mirror_is_watched():
    """SSD.forward mirrors DenseDetector.forward (see its docstring) and fills its hooks:
    fail when upstream's hooks or its sequence of steps change, so the copy gets revisited."""
    import inspect

    from detectron2.modeling.meta_arch.dense_detector import DenseDetector

    from ssd_r34.modeling import SSD

    for hook, args in (("forward_training", "(self, images, features, predictions, gt_instances)"),
                       ("forward_inference", "(self, images, features, predictions)")):
        if hasattr(DenseDetector, hook):  # forward_inference: called, not defined there
            assert str(inspect.signature(getattr(DenseDetector, hook))).startswith(args[:-1])
        assert str(inspect.signature(getattr(SSD, hook))).startswith(args[:-1])
    src = inspect.getsource(DenseDetector.forward)
    steps = ["self.preprocess_image(batched_inputs)", "self.backbone(images.tensor)",
             "self.head(features)", "self.forward_training(images, features, predictions, "
             "gt_instances)", "self.forward_inference(images, features, predictions)",
             "detector_postprocess(results_per_image, height, width)"]
    positions = [src.find(s) for s in steps]
    assert -1 not in positions, [s for s, p in zip(steps, positions) if p < 0]
    assert positions == sorted(positions), "DenseDetector.forward changed its order"
    assert "Mirrors detectron2.modeling.meta_arch.dense_detector.DenseDetector.forward" in \
        inspect.getsource(SSD.forward)
