"""Convert an MLPerf SSD-ResNet34 checkpoint (any of its four file shapes) into a Detectron2
checkpoint for ssd_r34 (``ssd-r34-convert-mlperf``; docs/checkpoints.md)."""
import argparse
import sys

import torch

from ..checkpoint import (CheckpointFormatError, UnsafeCheckpointError,
                          convert_mlperf_state_dict, read_mlperf_checkpoint)


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", help="MLPerf SSD-ResNet34 file (any of the four shapes)")
    parser.add_argument("output", help="Detectron2 checkpoint to write (.pth)")
    parser.add_argument("--num-classes", type=int, default=80,
                        help="foreground classes the file must have, as MODEL.SSD.NUM_CLASSES "
                             "(default 80, COCO); -1 accepts any count")
    return parser


def main(argv=None):
    """Returns: 0, or 1 when the file cannot be read."""
    args = get_parser().parse_args(argv)
    try:
        ckpt = read_mlperf_checkpoint(args.input,
                                      None if args.num_classes < 0 else args.num_classes)
    except (CheckpointFormatError, UnsafeCheckpointError, OSError) as e:
        print(f"error: {args.input}: {e}", file=sys.stderr)
        return 1
    print(f"Read {args.input}: {ckpt.describe()}")
    if "label_map" in ckpt.extra:
        print(f"  label_map with {len(ckpt.extra['label_map'])} entries (not needed: classes "
              "1..K of the file become ssd_r34's contiguous 0..K-1, in the same order)")
    state_dict = convert_mlperf_state_dict(ckpt)
    torch.save({"model": state_dict, "__author__": "MLPerf SSD-ResNet34 (converted by ssd_r34)"},
               args.output)
    print(f"Wrote {args.output}: {len(state_dict)} tensors in ssd_r34's layout (loc/conf "
          "channels anchor-major, background last); use it with MODEL.SSD.NUM_CLASSES "
          f"{ckpt.num_classes - 1}.")
    return 0


def cli_main():
    """Console script ``ssd-r34-convert-mlperf``."""
    sys.exit(main())
