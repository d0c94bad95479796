#!/usr/bin/env python
"""Convert torchvision's ImageNet ResNet-34 weights into an ssd_r34 backbone initialisation.

    tools/convert_torchvision_resnet34.py resnet34-b627a593.pth resnet34_d2.pth
    tools/train_net.py --config-file configs/ssd_r34_300.yaml MODEL.WEIGHTS resnet34_d2.pth

Keeps conv1/bn1 (the stem) and layer1..layer3 (res2..res4; res4's first block runs at
stride 1 in SSD, with the same weights), drops layer4 and fc. torchvision's models take
RGB in [0, 1] normalised by mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225): the
configs' INPUT.FORMAT RGB and PIXEL_MEAN / PIXEL_STD (the same numbers x 255). Extra blocks
and heads are not in the file: they keep their Xavier initialisation (Detectron2 lists
them as "not found in the checkpoint").
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from ssd_r34.checkpoint import (CheckpointFormatError, UnsafeCheckpointError,  # noqa: E402
                                convert_torchvision_resnet34, load_checkpoint_file)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="torchvision ResNet-34 state dict, e.g. "
                                      "resnet34-b627a593.pth or resnet34-333f7ec4.pth")
    parser.add_argument("output", help="Detectron2 checkpoint to write (.pth)")
    args = parser.parse_args(argv)
    try:
        obj, how = load_checkpoint_file(args.input)
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
            obj = obj["model"]
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
    print(f"Wrote {args.output}: backbone initialisation for ssd_r34 (stage 1: "
          f"tools/train_net.py --config-file configs/ssd_r34_300.yaml MODEL.WEIGHTS {args.output}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
