#!/usr/bin/env python
"""Parameters, FLOPs and activations of the SSD-ResNet34 model of a config, at its
INPUT.FIXED_SIZE (like Detectron2's tools/analyze_model.py, with fvcore).

    tools/analyze_model.py --config-file configs/ssd_r34_1200.yaml
    tools/analyze_model.py --config-file configs/ssd_r34_300.yaml --tasks flop --format table
    tools/analyze_model.py --config-file configs/ssd_r34_300.yaml --tasks parameter --depth 3

FLOPs and activations are those of the network (backbone and head, one image, eval mode),
counted by fvcore on the traced graph. fvcore counts one fused multiply-add as one flop, so
"GFLOPs" here are G multiply-adds; twice that is the count of separate multiplications and
additions (the MLPerf figure of 433 for the 1200x1200 model is of that kind). The box decoding
and NMS after the network are not counted (NMS has no fixed cost). Activations are the
elements of every convolution output (fvcore's definition).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from detectron2.modeling import build_model  # noqa: E402
from fvcore.nn import (ActivationCountAnalysis, FlopCountAnalysis, flop_count_table,  # noqa: E402
                       parameter_count, parameter_count_table)

from ssd_r34 import get_ssd_cfg  # noqa: E402


class _Network(nn.Module):
    """The traced part: normalised images -> (loc, conf) of every default box."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        loc, conf, _ = self.model.forward_network(images)
        return loc, conf


def setup(args):
    cfg = get_ssd_cfg()
    cfg.merge_from_file(args.config_file)
    # Counting runs on one CPU process: SyncBN is plain BN there (same parameters and FLOPs).
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", "BN",
                         "MODEL.SSD.FUSE_BN_INFERENCE", "False", *args.opts])
    cfg.freeze()
    return cfg


def analyze(cfg, tasks, depth=2):
    """Returns a dict of the numbers (and fvcore's tables)."""
    model = build_model(cfg).eval()
    H, W = model.input_size
    x = torch.zeros(1, 3, H, W)
    out = {"input": f"{H}x{W}", "strides": list(cfg.MODEL.SSD.STRIDES),
           "boxes": model.num_boxes()}
    net = _Network(model).eval()
    if "parameter" in tasks:
        counts = parameter_count(model)
        out["parameters"] = counts[""]
        out["parameter_table"] = parameter_count_table(model, max_depth=depth)
    def count(analysis_cls):
        with torch.no_grad():
            analysis = analysis_cls(net, (x,))
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            analysis.total()  # runs the trace once, quietly
        return analysis

    if "flop" in tasks:
        flops = count(FlopCountAnalysis)
        out["gflops"] = flops.total() / 1e9
        out["gflops_by_operator"] = {k: v / 1e9 for k, v in flops.by_operator().items()}
        out["flop_table"] = flop_count_table(flops, max_depth=depth)
    if "activation" in tasks:
        out["mactivations"] = count(ActivationCountAnalysis).total() / 1e6
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--tasks", nargs="+", choices=["parameter", "flop", "activation"],
                   default=["parameter", "flop", "activation"])
    p.add_argument("--depth", type=int, default=2, help="module depth of the tables")
    p.add_argument("--format", choices=["summary", "table", "json"], default="summary")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    args = p.parse_args(argv)
    cfg = setup(args)
    res = analyze(cfg, args.tasks, args.depth)
    if args.format == "json":
        print(json.dumps({k: v for k, v in res.items() if not k.endswith("_table")}, indent=1))
        return 0
    if args.format == "table":
        for k in ("parameter_table", "flop_table"):
            if k in res:
                print(res[k])
    print(f"{os.path.basename(args.config_file)}: input {res['input']}, strides "
          f"{' '.join(map(str, res['strides']))}, {res['boxes']} default boxes")
    if "parameters" in res:
        print(f"  parameters: {res['parameters'] / 1e6:.2f} M")
    if "gflops" in res:
        conv = res["gflops_by_operator"].get("conv", 0.0)
        print(f"  GFLOPs (fvcore, 1 multiply-add = 1 flop): {res['gflops']:.2f} "
              f"(convolutions {conv:.2f}, BatchNorm {res['gflops'] - conv:.2f}); the "
              f"convolutions as separate multiplications and additions: {2 * conv:.1f}")
    if "mactivations" in res:
        print(f"  activations (conv outputs): {res['mactivations']:.1f} M")
    return 0


if __name__ == "__main__":
    sys.exit(main())
