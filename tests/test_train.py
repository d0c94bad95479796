"""Training lowers the loss; evaluation through COCOEvaluator returns AP."""
import math

import torch

from conftest import make_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from ssd_r34.data import SSDDatasetMapper
from ssd_r34.engine import SSDTrainer

TINY = ["INPUT.FIXED_SIZE", "(96, 96)", "MODEL.SSD.STRIDES", "[1, 1, 2, 1, 1, 1]",
        "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "4"]


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


def test_trainer_trains_and_evaluates_with_coco_ap(tmp_path):
    cfg = make_cfg("configs/ssd_r34_shapes.yaml", *TINY, "SOLVER.MAX_ITER", "4",
                   "SOLVER.WARMUP_ITERS", "0", "OUTPUT_DIR", str(tmp_path))
    trainer = SSDTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == 4  # MAX_ITER: iterations 0..3 ran
    assert (tmp_path / "model_final.pth").exists()
    res = SSDTrainer.test(cfg, trainer.model)
    bbox = res["bbox"]
    assert {"AP", "AP50", "AP75", "AP-circle", "AP-square", "AP-triangle"} <= set(bbox)
    assert all(0 <= v <= 100 or math.isnan(v) for v in bbox.values())
