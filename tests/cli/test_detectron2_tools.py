"""Detectron2's own tools on ssd_r34: a custom COCO-format data set registered with
``register_coco_instances`` and trained through DATASETS.TRAIN; Detectron2's
``DefaultPredictor`` either gives SSDPredictor's detections (when its shortest-edge resize
lands exactly on INPUT.FIXED_SIZE) or refuses, naming SSDPredictor."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from conftest import NO_WINOGRAD, TINY_TRAIN, make_cfg

TINY = [*TINY_TRAIN, *NO_WINOGRAD]


pytestmark = pytest.mark.usefixtures("one_thread")


def write_coco(folder, n=4):
    """n images of 80x100 with a red box (category id 7, "box") and a blue disc (id 3,
    "disc"): COCO ids that are neither contiguous nor in order."""
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    rng = np.random.default_rng(0)
    for i in range(n):
        im = Image.new("RGB", (100, 80), (40, 40, 40))
        d = ImageDraw.Draw(im)
        x, y = int(rng.integers(5, 40)), int(rng.integers(5, 30))
        d.rectangle([x, y, x + 30, y + 25], fill=(220, 30, 30))
        d.ellipse([60, 40, 90, 70], fill=(30, 30, 220))
        im.save(folder / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 100, "height": 80})
        annotations += [
            {"id": 2 * i + 1, "image_id": i + 1, "category_id": 7, "bbox": [x, y, 30, 25],
             "area": 750, "iscrowd": 0},
            {"id": 2 * i + 2, "image_id": i + 1, "category_id": 3, "bbox": [60, 40, 30, 30],
             "area": 700, "iscrowd": 0}]
    path = folder / "train.json"
    path.write_text(json.dumps({"info": {}, "licenses": [], "images": images,
                                "annotations": annotations, "categories": [
        {"id": 7, "name": "box"}, {"id": 3, "name": "disc"}]}))
    return str(path)


def test_register_coco_instances_trains_and_evaluates_through_datasets_train(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    from ssd_r34.engine import SSDTrainer

    json_file = write_coco(tmp_path / "mine")
    name = f"mine_{tmp_path.name}"
    register_coco_instances(name, {}, json_file, str(tmp_path / "mine"))
    try:
        cfg = make_cfg("configs/ssd_r34_shapes.yaml", *TINY, "DATASETS.TRAIN", f"('{name}',)",
                       "DATASETS.TEST", f"('{name}',)", "MODEL.SSD.NUM_CLASSES", "2",
                       "SOLVER.MAX_ITER", "3", "OUTPUT_DIR", str(tmp_path / "out"))
        trainer = SSDTrainer(cfg)
        seen = []
        trainer.model.register_forward_pre_hook(
            lambda m, args: seen.extend(x["file_name"] for x in args[0]) if m.training else None)
        trainer.resume_or_load(resume=False)
        trainer.train()
        assert trainer.iter == 3
        assert seen and all(str(tmp_path / "mine") in f for f in seen)  # our images
        # COCO ids 7 and 3 became contiguous classes in Detectron2's order: sorted ids
        assert MetadataCatalog.get(name).thing_classes == ["disc", "box"]
        classes = {int(c) for d in DatasetCatalog.get(name) for c in
                   (a["category_id"] for a in d["annotations"])}
        assert classes == {0, 1}
        res = trainer._last_eval_results  # the evaluation after the last iteration
        assert {"AP", "AP-box", "AP-disc"} <= set(res["bbox"])
        assert all(0 <= v <= 100 or math.isnan(v) for v in res["bbox"].values())
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_default_predictor_matches_ssd_predictor_or_refuses():
    from detectron2.engine import DefaultPredictor

    from ssd_r34.engine import SSDPredictor

    cfg = make_cfg("configs/ssd_r34_shapes.yaml", *TINY, "INPUT.MIN_SIZE_TEST", "64",
                   "MODEL.SSD.SCORE_THRESH_TEST", "0.0")
    d2 = DefaultPredictor(cfg)
    ours = SSDPredictor(cfg)
    torch.manual_seed(0)
    for p in d2.model.parameters():
        p.data.normal_(0, 0.05)
    ours.model.load_state_dict(d2.model.state_dict())
    rng = np.random.default_rng(0)
    # A square image: the shortest-edge resize gives 64x64 = INPUT.FIXED_SIZE, so
    # DefaultPredictor runs SSD correctly, with SSDPredictor's detections.
    square = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    a, b = d2(square)["instances"], ours(square)["instances"]
    assert len(a) == len(b) > 0
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-3, rtol=0)
    torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=0)
    # Any other shape would reach the network at another size (64x96 here): refused.
    wide = rng.integers(0, 256, (80, 120, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"64x96.*INPUT.FIXED_SIZE 64x64.*SSDPredictor"):
        d2(wide)
    assert len(ours(wide)["instances"]) > 0  # SSDPredictor resizes to 64x64
