"""Convert torchvision's ImageNet ResNet-34 weights into an ssd_r34 backbone initialisation
(the stem and layer1..layer3; docs/checkpoints.md)."""
import argparse
import sys

import torch

from ..checkpoint import (CheckpointFormatError, UnsafeCheckpointError,
                          convert_torchvision_resnet34, load_checkpoint_file)


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", help="torchvision ResNet-34 state dict, e.g. "
                                      "resnet34-b627a593.pth or resnet34-333f7ec4.pth")
    parser.add_argument("output", help="Detectron2 checkpoint to write (.pth)")
    return parser


def main(argv=None):
    """Returns: 0, or 1 when the file cannot be read."""
    args = get_parser().parse_args(argv)
    try:
        obj, how = load_checkpoint_file(args.input)
        for key in ("state_dict", "model"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if not isinstance(obj, dict):
            raise CheckpointFormatError(f"read {how}: a {type(obj).__name__}, not a state dict")
        state_dict = convert_torchvision_resnet34(obj)
    except (CheckpointFormatError, UnsafeCheckpointError, OSError) as e:
        print(f"error: {args.input}: {e}", file=sys.stderr)
        return 1
    print(f"Read {args.input} ({how}): torchvision ResNet-34, {len(obj)} entries; kept the "
          f"stem and layer1..layer3 ({len(state_dict)} tensors), dropped layer4, fc and "
          "num_batches_tracked.")
    torch.save({"model": state_dict, "__author__": "torchvision ResNet-34 (converted by ssd_r34)"},
               args.output)
    print(f"Wrote {args.output}: backbone initialisation for ssd_r34 (stage 1: tools/train_net.py "
          f"--config-file configs/ssd_r34_300.yaml MODEL.WEIGHTS {args.output}).")
    return 0
