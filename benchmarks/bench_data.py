"""Training data mapper at 1200x1200, per image, from a 640x480 JPEG with 5 boxes.

``SSDDatasetMapper(cfg, is_train=True)`` against the reference's per-image transform, without
and with its target encoding; a sample maps the image 8 times (docs/speed.md).
"""
import os
import random
import tempfile

import numpy as np
import torch
from PIL import Image

from _common import make_cfg, parse, parser, report, time_interleaved
from baseline import ReferenceTrainTransform, reference_default_boxes
from detectron2.modeling import build_model
from detectron2.structures import BoxMode
from ssd_r34.data import SSDDatasetMapper

CALLS = 8
BOXES = [[40, 60, 200, 220, 1], [300, 100, 520, 400, 17], [100, 300, 180, 460, 3],
         [420, 20, 630, 180, 62], [250, 250, 330, 330, 44]]  # x0, y0, x1, y1, class


def write_jpeg(path, h=480, w=640, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], -1)
    img = np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, quality=90)


def main(argv=None):
    args = parse(parser(__doc__.splitlines()[0], repeats=5), argv)
    cfg = make_cfg("configs/ssd_r34_1200.yaml")
    H, W = cfg.INPUT.FIXED_SIZE
    sizes = build_model(cfg).head_output_sizes()
    dboxes = reference_default_boxes((H, W), sizes)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "image.jpg")
        write_jpeg(path)
        record = {"file_name": path, "height": 480, "width": 640, "image_id": 0,
                  "annotations": [{"bbox": b[:4], "bbox_mode": BoxMode.XYXY_ABS,
                                   "category_id": b[4], "iscrowd": 0} for b in BOXES]}
        boxes = [b[:4] for b in BOXES]
        labels = [b[4] + 1 for b in BOXES]
        mapper = SSDDatasetMapper(cfg, is_train=True)
        plain = ReferenceTrainTransform((H, W), dboxes, encode=False)
        encoding = ReferenceTrainTransform((H, W), dboxes, encode=True)

        def seeded(fn):
            def run():
                random.seed(0)
                np.random.seed(0)
                torch.manual_seed(0)
                for _ in range(CALLS):
                    fn()
            return run

        out = mapper(record)
        assert out["image"].shape == (3, H, W) and out["image"].dtype == torch.uint8
        img, loc, lab = encoding(path, boxes, labels)
        assert img.shape == (3, H, W) and lab.shape == (dboxes.shape[0],)
        fns = {"baseline (reference transform, no encoding)": seeded(
                   lambda: plain(path, boxes, labels)),
               "baseline + per-image encoding (as its loader)": seeded(
                   lambda: encoding(path, boxes, labels)),
               "ssd_r34 SSDDatasetMapper": seeded(lambda: mapper(record))}
        times = time_interleaved(fns, args.repeats)
    return report(
        f"Data mapper: 640x480 JPEG -> {H}x{W} training sample (per image)", times,
        next(iter(fns)), target=("ssd_r34 SSDDatasetMapper", 1.0), per=CALLS,
        notes=["ssd_r34 outputs uint8 (normalisation runs in the model, on the device) and "
               "leaves matching to the model (on the whole batch, on the device)."],
        json_path=args.json, key="data")


if __name__ == "__main__":
    main()
