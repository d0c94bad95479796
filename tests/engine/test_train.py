"""Training lowers the loss; evaluation through COCOEvaluator returns AP."""
import math

import pytest
import torch

from conftest import SMALL, make_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from ssd_r34.data import SSDDatasetMapper
from ssd_r34.engine import SSDTrainer

TINY = [*SMALL, "SOLVER.IMS_PER_BATCH", "4"]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_short_training_lowers_the_loss():
    torch.manual_seed(0)
    cfg = make_cfg("configs/ssd_r34_shapes.yaml", *TINY)
    model = build_model(cfg)
    mapper = SSDDatasetMapper(cfg, is_train=True)
    dicts = DatasetCatalog.get("shapes_train")[:4]
    batch = [mapper(d) for d in dicts]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = sum(model(batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.5 * losses[0], losses


def test_trainer_trains_and_evaluates_with_coco_ap(short_run):
    """The session's short run (conftest.short_run: SSDTrainer, 3 iterations, evaluated on
    4 validation images), then SSDTrainer.test on its final weights."""
    import json

    from detectron2.checkpoint import DetectionCheckpointer

    from ssd_r34.config import get_ssd_cfg

    final = torch.load(short_run / "model_final.pth", weights_only=False)
    assert final["iteration"] == 2  # MAX_ITER 3: iterations 0..2 ran
    cfg = get_ssd_cfg()
    cfg.merge_from_file(str(short_run / "config.yaml"))
    logged = [r for r in map(json.loads, open(short_run / "metrics.json")) if "bbox/AP" in r]
    assert logged and logged[-1]["iteration"] >= 2  # the evaluation after training
    model = SSDTrainer.build_model(cfg)
    DetectionCheckpointer(model).load(str(short_run / "model_final.pth"))
    res = SSDTrainer.test(cfg, model)
    bbox = res["bbox"]
    assert {"AP", "AP50", "AP75", "AP-circle", "AP-square", "AP-triangle"} <= set(bbox)
    assert all(0 <= v <= 100 or math.isnan(v) for v in bbox.values())
    assert bbox["AP"] == pytest.approx(logged[-1]["bbox/AP"], nan_ok=True)
