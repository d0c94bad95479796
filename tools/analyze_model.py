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
elements of every convolution output (fvcore's definition). Config overrides are KEY VALUE
pairs after the options (``--opts KEY VALUE ...`` works too), e.g. MODEL.SSD.NUM_CLASSES 2.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssd_r34 import get_ssd_cfg  # noqa: E402
from ssd_r34.cli import args as cli  # noqa: E402
from ssd_r34.modeling.analysis import analyze_model  # noqa: E402


def setup(args):
    cfg = get_ssd_cfg()
    cfg.merge_from_file(args.config_file)
    # Counting runs on one CPU process: SyncBN is plain BN there (same parameters and FLOPs).
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", "BN",
                         "MODEL.SSD.FUSE_BN_INFERENCE", "False", *args.opts])
    cfg.freeze()
    return cfg


def get_parser():
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--tasks", nargs="+", choices=["parameter", "flop", "activation"],
                   default=["parameter", "flop", "activation"])
    p.add_argument("--depth", type=int, default=2, help="module depth of the tables")
    p.add_argument("--format", choices=["summary", "table", "json"], default="summary")
    return cli.add_override_arguments(p)


def main(argv=None):
    args = get_parser().parse_args(argv)
    cfg = setup(args)
    res = analyze_model(cfg, args.tasks, args.depth)
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
