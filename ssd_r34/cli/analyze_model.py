"""Parameters, FLOPs and activations of a config's model at its INPUT.FIXED_SIZE (fvcore, as
Detectron2's tools/analyze_model.py; docs/tools.md)."""
import json
import os

from ..config import setup_cfg
from ..modeling.analysis import analyze_model
from . import args as cli


def get_parser():
    p = cli.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--tasks", nargs="+", choices=["parameter", "flop", "activation"],
                   default=["parameter", "flop", "activation"])
    p.add_argument("--depth", type=int, default=2, help="module depth of the tables")
    p.add_argument("--format", choices=["summary", "table", "json"], default="summary")
    return cli.add_common_arguments(p, datasets=False)


def main(argv=None):
    """Returns: 0."""
    args = get_parser().parse_args(argv)
    # Counting runs on one CPU process: SyncBN is plain BN there (same parameters and FLOPs).
    args.opts = ["MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", "BN",
                 "MODEL.SSD.FUSE_BN_INFERENCE", "False", *args.opts]
    res = analyze_model(setup_cfg(args), args.tasks, args.depth)
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
