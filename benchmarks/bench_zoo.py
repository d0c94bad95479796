"""The numbers of the README's model-zoo table, per config: input, strides, default boxes,
parameters, GFLOPs (fvcore, as tools/analyze_model.py), training seconds per iteration and
inference seconds per image on this machine's CPU.

    python benchmarks/bench_zoo.py                       # every config
    python benchmarks/bench_zoo.py --configs configs/ssd_r34_300.yaml --train-batch 8

Training: one optimiser step of ``SSDTrainer``'s optimiser on a synthetic batch of
``--train-batch`` uint8 images at the config's INPUT.FIXED_SIZE with 1-5 ground-truth boxes
each (forward, matching, loss, backward, step; the data loader is not timed). Inference:
``model(batched_inputs)`` in eval mode at batch 1, boxes rescaled to 480x640, random weights
(a trained model has more candidates above the score threshold; its postprocess is timed in
bench_postprocess.py). Median of ``--repeats`` timed runs after one warm-up run. SyncBN
configs run with BN (one process).
"""
import os
import statistics
import time

import torch

from _common import environment, make_cfg, parse, parser

from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402

from ssd_r34.engine import SSDTrainer  # noqa: E402
from ssd_r34.modeling.analysis import analyze_model  # noqa: E402

CONFIGS = ["configs/ssd_r34_shapes.yaml", "configs/ssd_r34_300.yaml", "configs/ssd_r34_700.yaml",
           "configs/ssd_r34_1200.yaml", "configs/ssd_r34_800x1200.yaml"]


def synthetic_batch(size, batch, num_classes, seed=0):
    H, W = size
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        n = int(torch.randint(1, 6, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * torch.tensor([W * 0.7, H * 0.7])
        wh = (torch.rand(n, 2, generator=g) * 0.4 + 0.05) * torch.tensor([W, H])
        boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([W, H]))], 1)
        out.append({"image": torch.randint(0, 256, (3, H, W), generator=g, dtype=torch.uint8),
                    "instances": Instances((H, W), gt_boxes=Boxes(boxes),
                                           gt_classes=torch.randint(0, num_classes, (n,),
                                                                    generator=g))})
    return out


def timed(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(config, train_batch, repeats):
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

    model.train()
    train_s = timed(train_step, repeats)
    model.eval()
    H, W = model.input_size
    image = [{"image": torch.randint(0, 256, (3, H, W), dtype=torch.uint8),
              "height": 480, "width": 640}]

    def infer():
        with torch.no_grad():
            model(image)

    infer_s = timed(infer, repeats)
    return sizes, train_s, infer_s


def main(argv=None):
    p = parser(__doc__.splitlines()[0], repeats=3)
    p.add_argument("--configs", nargs="+", default=CONFIGS)
    p.add_argument("--train-batch", type=int, default=2, help="images a training step")
    args = parse(p, argv)
    print(f"\n### Model zoo numbers (CPU)\n\n{environment()}; median of {args.repeats} runs; "
          f"training batch {args.train_batch}.\n")
    print(f"| config | input | strides | default boxes | parameters | GFLOPs | "
          f"train s/iter (batch {args.train_batch}) | inference s/image (batch 1) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for config in args.configs:
        sizes, train_s, infer_s = measure(config, args.train_batch, args.repeats)
        print(f"| `{os.path.basename(config)}` | {sizes['input']} | "
              f"{' '.join(map(str, sizes['strides']))} | {sizes['boxes']} | "
              f"{sizes['parameters'] / 1e6:.2f} M | {sizes['gflops']:.2f} | {train_s:.2f} | "
              f"{infer_s:.2f} |", flush=True)
    print(f"\n1-min load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
