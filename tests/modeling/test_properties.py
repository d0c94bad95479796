"""Property-based tests (hypothesis) of the box code: random boxes, image sizes and crops
through the SSD crop, the mapper, the matching rule and the postprocess keep their
invariants. Examples per test: SSD_R34_HYPOTHESIS_EXAMPLES (default 25)."""
import os
import types

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import make_cfg
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import BoxMode
from ssd_r34.data import SSDDatasetMapper, SSDRandomCrop
from ssd_r34.data.loader import SeededMapDataset
from ssd_r34.data.validation import box_problem
from ssd_r34.modeling.box_ops import batched_pairwise_iou, match_default_boxes
from ssd_r34.modeling.meta_arch import SSD
from ssd_r34.modeling.postprocessing import rescale_detections

settings.register_profile(
    "ssd_r34", max_examples=int(os.environ.get("SSD_R34_HYPOTHESIS_EXAMPLES", "25")),
    deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("ssd_r34")


@st.composite
def image_and_boxes(draw, max_boxes=6, valid_only=True):
    h = draw(st.integers(16, 160))
    w = draw(st.integers(16, 160))
    boxes = []
    for _ in range(draw(st.integers(1, max_boxes))):
        x0 = draw(st.floats(0, w - 2))
        y0 = draw(st.floats(0, h - 2))
        x1 = draw(st.floats(x0 + 1, w))
        y1 = draw(st.floats(y0 + 1, h))
        boxes.append([x0, y0, x1, y1])
    return h, w, np.array(boxes, dtype=np.float64)


ANY_FLOAT = st.one_of(st.floats(-50, 250), st.sampled_from(
    [float("nan"), float("inf"), -float("inf"), 0.0, -1.0]))


@given(image_and_boxes(), st.integers(0, 2**31 - 1))
def test_ssd_crop_keeps_boxes_inside_and_only_those_with_centre_inside(hwb, seed):
    h, w, boxes = hwb
    np.random.seed(seed)
    t = SSDRandomCrop().get_transform(np.zeros((h, w, 3), np.uint8), boxes)
    np.random.seed(seed)
    again = SSDRandomCrop().get_transform(np.zeros((h, w, 3), np.uint8), boxes)
    assert type(t) is type(again) and getattr(t, "__dict__", {}) == getattr(again, "__dict__", {})
    out = t.apply_box(boxes)
    img = t.apply_image(np.zeros((h, w, 3), np.uint8))
    ch, cw = img.shape[:2]
    assert np.isfinite(out).all()
    kept = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    assert kept.any()  # the crop keeps at least one box centre
    k = out[kept]
    # inside the cut image (up to the fractional crop edge, under one pixel)
    assert (k[:, :2] >= 0).all() and (k[:, 2] <= cw + 1).all() and (k[:, 3] <= ch + 1).all()
    if hasattr(t, "centre_inside"):
        assert (kept <= t.centre_inside(boxes)).all()


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prop")
    paths = {}
    for h, w in ((40, 60), (90, 50), (33, 128)):
        p = str(folder / f"{h}x{w}.png")
        Image.fromarray(np.random.default_rng(h).integers(0, 255, (h, w, 3), np.uint8)).save(p)
        paths[(h, w)] = p
    return paths


@pytest.fixture(scope="module")
def train_mapper():
    return SSDDatasetMapper(make_cfg("configs/ssd_r34_shapes.yaml", "INPUT.FIXED_SIZE",
                                     "(48, 64)"), is_train=True)


@given(size=st.sampled_from([(40, 60), (90, 50), (33, 128)]),
       boxes=st.lists(st.tuples(ANY_FLOAT, ANY_FLOAT, ANY_FLOAT, ANY_FLOAT,
                                st.integers(0, 2)), min_size=1, max_size=8),
       seed=st.integers(0, 2**31 - 1))
def test_mapper_targets_are_inside_finite_and_from_valid_annotations(picture, train_mapper,
                                                                      size, boxes, seed):
    h, w = size
    annos = [{"id": i, "bbox": list(b[:4]), "bbox_mode": BoxMode.XYWH_ABS,
              "category_id": b[4], "iscrowd": 0} for i, b in enumerate(boxes)]
    record = {"file_name": picture[size], "height": h, "width": w, "image_id": 0,
              "annotations": annos}
    valid = [a for a in annos if box_problem(a["bbox"], a["bbox_mode"], w, h) is None]
    ds = SeededMapDataset([record], train_mapper, max_attempts=1)
    try:
        out = ds[(seed, 0)]
    except RuntimeError:  # the mapper returned None: no valid box survived
        out = None
    if not valid:
        assert out is None
        return
    if out is None:  # possible only through the crop dropping boxes: never with one kept
        return
    inst = out["instances"]
    b = inst.gt_boxes.tensor
    assert torch.isfinite(b).all()
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
    assert (b[:, 2] <= 64).all() and (b[:, 3] <= 48).all()
    assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()
    assert len(inst) <= len(valid)
    assert sorted(inst.gt_classes.tolist()) <= sorted(a["category_id"] for a in valid) or \
        set(inst.gt_classes.tolist()) <= {a["category_id"] for a in valid}
    again = ds[(seed, 0)]["instances"]  # same seed, same sample
    assert torch.equal(again.gt_boxes.tensor, b) and torch.equal(again.gt_classes, inst.gt_classes)
    assert torch.equal(ds[(seed, 0)]["image"], out["image"])


@given(hwb=image_and_boxes(max_boxes=8), anchors=image_and_boxes(max_boxes=40),
       pad=st.integers(0, 3), thr=st.floats(0.1, 0.9))
def test_every_valid_ground_truth_gets_its_forced_default_box(hwb, anchors, pad, thr):
    _, _, gt = hwb
    _, _, anc = anchors
    G = len(gt) + pad
    gt_boxes = torch.zeros(1, G, 4)
    gt_boxes[0, :len(gt)] = torch.as_tensor(gt, dtype=torch.float32)
    valid = torch.zeros(1, G, dtype=torch.bool)
    valid[0, :len(gt)] = True
    anchors_t = torch.as_tensor(anc, dtype=torch.float32)
    matched, positive = match_default_boxes(gt_boxes, valid, anchors_t, thr)
    iou = batched_pairwise_iou(gt_boxes, anchors_t)[0]
    assert not torch.isnan(iou[: len(gt)]).any()
    assert (matched[0] < len(gt)).all()  # never a padding entry
    best = iou[: len(gt)].argmax(dim=1)
    for j in range(len(gt)):
        r = int(best[j])
        assert positive[0, r]
        # forced to j, or to the last ground truth that has the same best box
        assert int(matched[0, r]) == max(i for i in range(len(gt)) if int(best[i]) == r)
    forced = set(best.tolist())
    for r in range(len(anc)):
        if r not in forced:
            assert bool(positive[0, r]) == bool(iou[:len(gt), r].max() > thr)


@given(data=st.data(), n_classes=st.integers(1, 4), n_boxes=st.integers(1, 60),
       height=st.integers(10, 400), width=st.integers(10, 400),
       nonfinite=st.booleans())
def test_postprocess_keeps_its_invariants(data, n_classes, n_boxes, height, width, nonfinite):
    torch.manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    H, W = 64, 64
    xy = torch.rand(n_boxes, 2) * 60
    wh = torch.rand(n_boxes, 2) * 30 + 1
    anchors = torch.cat([xy, xy + wh], dim=1)
    loc = torch.randn(1, n_boxes, 4)
    conf = torch.randn(1, n_boxes, n_classes + 1) * 3
    if nonfinite:
        loc[0, ::3] = float("nan")
        conf[0, 1::4, 0] = float("inf")
    fake = types.SimpleNamespace(
        num_classes=n_classes, test_score_thresh=0.05, test_topk_candidates=10,
        test_nms_thresh=0.5, max_detections_per_image=15,
        box2box_transform=Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0)))
    r = SSD.inference(fake, loc, conf, anchors, (H, W))[0]
    again = SSD.inference(fake, loc, conf, anchors, (H, W))[0]
    assert torch.equal(r.pred_boxes.tensor, again.pred_boxes.tensor)
    assert len(r) <= 15 and torch.isfinite(r.pred_boxes.tensor).all()
    assert (r.scores > 0.05).all() and (r.scores[:-1] >= r.scores[1:]).all()
    assert ((r.pred_classes >= 0) & (r.pred_classes < n_classes)).all()
    for c in range(n_classes):
        b = r.pred_boxes.tensor[r.pred_classes == c]
        assert len(b) <= 10
        if len(b) > 1:
            iou = batched_pairwise_iou(b[None], b)[0]
            iou.fill_diagonal_(0)
            assert (iou <= 0.5 + 1e-6).all()
    out = rescale_detections(r, height, width)
    b = out.pred_boxes.tensor
    assert (b[:, 0::2] >= 0).all() and (b[:, 0::2] <= width).all()
    assert (b[:, 1::2] >= 0).all() and (b[:, 1::2] <= height).all()
