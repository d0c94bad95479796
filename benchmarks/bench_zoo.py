"""The numbers of the README's model-zoo table, per config: sizes, GFLOPs (fvcore), training
s/iteration and inference s/image on this CPU (README, "How each number is made").

    python benchmarks/bench_zoo.py [--configs configs/ssd_r34_300.yaml] [--train-batch 8]
"""
import os
import statistics

import torch

from _common import (environment, make_cfg, md_table, parse, parser, random_images,
                     synthetic_batch, time_interleaved)
from detectron2.modeling import build_model

from ssd_r34.engine import SSDTrainer
from ssd_r34.modeling.analysis import analyze_model

CONFIGS = ["configs/ssd_r34_shapes.yaml", "configs/ssd_r34_300.yaml", "configs/ssd_r34_700.yaml",
           "configs/ssd_r34_1200.yaml", "configs/ssd_r34_800x1200.yaml"]


def measure(config, train_batch, repeats):
    """(analyze_model's sizes, median seconds of an optimiser step on a synthetic batch,
    median seconds of inference at batch 1 from a uint8 image, boxes rescaled to 480x640)."""
    cfg = make_cfg(config)
    sizes = analyze_model(cfg, ["parameter", "flop"])
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = SSDTrainer.build_optimizer(cfg, model)
    batch = synthetic_batch(model.input_size, train_batch, cfg.MODEL.SSD.NUM_CLASSES)

    def train_step():
        losses = model(batch)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()

    def timed(fn):  # median of ``repeats`` runs after one warm-up run
        return statistics.median(time_interleaved({"": fn}, repeats)[""])

    model.train()
    train_s = timed(train_step)
    model.eval()
    image = random_images(1, model.input_size, original=(480, 640))[1]

    def infer():
        with torch.no_grad():
            model(image)

    return sizes, train_s, timed(infer)


def main(argv=None):
    p = parser(__doc__.splitlines()[0], repeats=3)
    p.add_argument("--configs", nargs="+", default=CONFIGS)
    p.add_argument("--train-batch", type=int, default=2, help="images a training step")
    args = parse(p, argv)
    print(f"\n### Model zoo numbers (CPU)\n\n{environment()}; median of {args.repeats} runs; "
          f"training batch {args.train_batch}.\n")
    rows = []
    for config in args.configs:
        sizes, train_s, infer_s = measure(config, args.train_batch, args.repeats)
        rows.append([f"`{os.path.basename(config)}`", sizes["input"],
                     " ".join(map(str, sizes["strides"])), sizes["boxes"],
                     f"{sizes['parameters'] / 1e6:.2f} M", f"{sizes['gflops']:.2f}",
                     f"{train_s:.2f}", f"{infer_s:.2f}"])
        print(f"{config}: done", flush=True)
    print(md_table(["config", "input", "strides", "default boxes", "parameters", "GFLOPs",
                    f"train s/iter (batch {args.train_batch})", "inference s/image (batch 1)"],
                   rows, "lllrrrrr"))
    print(f"\n1-min load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
