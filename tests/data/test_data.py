"""SSD augmentations and the dataset mapper."""
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_cfg
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from ssd_r34.data import SSDCropTransform, SSDDatasetMapper, SSDRandomCrop


def test_crop_keeps_exactly_the_boxes_whose_centres_are_inside():
    crop = SSDCropTransform(20.5, 10.2, 80.7, 70.9)  # image cut at [20, 80) x [10, 70)
    boxes = np.array([
        [30, 20, 50, 40],     # centre (40, 30) inside
        [0, 0, 30, 30],       # centre (15, 15) outside (left)
        [10, 10, 40, 40],     # centre (25, 25) inside, clipped on the left/top
        [70, 60, 100, 100],   # centre (85, 80) outside
        [60, 50, 100, 90],    # centre (80, 70) inside (80 < 80.7, 70 < 70.9), clipped
        [0, 0, 41.0, 20.4],   # centre (20.5, 10.2): on the edge, not strictly inside
    ], dtype=np.float64)
    out = crop.apply_box(boxes)
    kept = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    assert kept.tolist() == [True, False, True, False, True, False]
    np.testing.assert_allclose(out[0], [10, 10, 30, 30])
    np.testing.assert_allclose(out[2], [0.5, 0.2, 20, 30])
    np.testing.assert_allclose(out[4], [40, 40, 60.7, 60.9])
    img = np.zeros((100, 120, 3), np.uint8)
    assert crop.apply_image(img).shape == (60, 60, 3)


def test_random_crop_respects_min_iou_and_keeps_a_box():
    np.random.seed(0)
    img = np.zeros((200, 300, 3), np.uint8)
    boxes = np.array([[100, 50, 200, 150], [10, 10, 40, 30]], dtype=np.float64)
    aug = SSDRandomCrop()
    kinds = set()
    for _ in range(200):
        t = aug.get_transform(img, boxes)
        kinds.add(type(t).__name__)
        if isinstance(t, SSDCropTransform):
            w, h = t.x1 - t.x0, t.y1 - t.y0
            assert 0.3 * 300 <= w <= 300 and 0.3 * 200 <= h <= 200
            assert 0.5 <= (w / 300) / (h / 200) <= 2
            assert t.centre_inside(boxes).any()
    assert kinds == {"NoOpTransform", "SSDCropTransform"}


def _write_image(tmp_path, h=120, w=160):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    path = str(tmp_path / "img.png")
    Image.fromarray(arr).save(path)
    return path, arr


def test_train_mapper_output_at_fixed_size(tmp_path):
    path, _ = _write_image(tmp_path)
    cfg = make_cfg("configs/ssd_r34_300.yaml", "INPUT.FIXED_SIZE", "(96, 128)")
    mapper = SSDDatasetMapper(cfg, is_train=True)
    d = {"file_name": path, "height": 120, "width": 160, "image_id": 0, "annotations": [
        {"bbox": [20, 30, 60, 40], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 2},
        {"bbox": [90, 10, 50, 50], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0},
        {"bbox": [0, 0, 160, 120], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "iscrowd": 1},
    ]}
    np.random.seed(1)
    torch.manual_seed(1)
    for _ in range(20):
        out = mapper(d)
        assert out["image"].shape == (3, 96, 128) and out["image"].dtype == torch.uint8
        inst = out["instances"]
        assert 1 <= len(inst) <= 2 and set(inst.gt_classes.tolist()) <= {0, 2}
        b = inst.gt_boxes.tensor
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= 128).all() and (b[:, 3] <= 96).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()


def test_eval_mapper_resizes_only(tmp_path):
    path, arr = _write_image(tmp_path)
    cfg = make_cfg("configs/ssd_r34_300.yaml", "INPUT.FIXED_SIZE", "(96, 128)")
    out = SSDDatasetMapper(cfg, is_train=False)({"file_name": path, "height": 120, "width": 160,
                                                 "annotations": []})
    expected = np.asarray(Image.fromarray(arr).resize((128, 96), Image.BILINEAR))
    assert torch.equal(out["image"], torch.from_numpy(expected.transpose(2, 0, 1).copy()))
    assert "instances" not in out and out["height"] == 120


def test_flip_and_resize_move_boxes_with_the_image():
    img = np.zeros((100, 200, 3), np.uint8)
    img[10:30, 20:60] = 255
    boxes = np.array([[20, 10, 60, 30]], dtype=np.float64)
    aug_input = T.AugInput(img, boxes=boxes)
    tfm = T.AugmentationList([T.RandomFlip(prob=1.0), T.Resize((50, 50))])(aug_input)
    b = tfm.apply_box(boxes)[0]
    ys, xs = np.nonzero(aug_input.image[..., 0] > 127)
    assert abs(xs.min() - b[0]) <= 1 and abs(xs.max() + 1 - b[2]) <= 1
    assert abs(ys.min() - b[1]) <= 1 and abs(ys.max() + 1 - b[3]) <= 1
