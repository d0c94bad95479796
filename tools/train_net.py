#!/usr/bin/env python
"""Train or evaluate SSD-ResNet34 with Detectron2's usual command line (``ssd-r34-train`` once
installed; the code is ssd_r34/cli/train.py).

    tools/train_net.py --config-file configs/ssd_r34_1200.yaml --num-gpus 8
    tools/train_net.py --config-file configs/ssd_r34_1200.yaml --eval-only MODEL.WEIGHTS model.pth
    tools/train_net.py --config-file configs/ssd_r34_shapes.yaml MODEL.DEVICE cpu
    tools/train_net.py --config-file configs/ssd_r34_shapes.yaml --eval-only \
        MODEL.WEIGHTS model.pth MODEL.SSD.INFERENCE_BACKEND openvino \
        MODEL.SSD.INFERENCE_DTYPE int8 MODEL.SSD.INT8.CALIBRATION_DIR calib/  # tools/calibrate.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssd_r34.cli.train import cli, main  # noqa: E402,F401  (main: for callers of the old tool)

if __name__ == "__main__":
    cli()
