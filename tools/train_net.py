#!/usr/bin/env python
r"""Train or evaluate SSD-ResNet34 with Detectron2's usual command line (``ssd-r34-train`` once
installed; the code is ssd_r34/cli/train.py).

    tools/train_net.py --config-file configs/ssd_r34_1200.yaml --num-gpus 8
    tools/train_net.py --config-file configs/ssd_r34_1200.yaml --eval-only MODEL.WEIGHTS model.pth
    tools/train_net.py --config-file configs/ssd_r34_shapes.yaml MODEL.DEVICE cpu
    tools/train_net.py --config-file configs/ssd_r34_shapes.yaml --eval-only \
        MODEL.WEIGHTS model.pth MODEL.SSD.INFERENCE_BACKEND openvino \
        MODEL.SSD.INFERENCE_DTYPE int8 MODEL.SSD.INT8.CALIBRATION_DIR calib/  # tools/calibrate.py

    # your own COCO-format data set (docs/data.md, "Train on your own data")
    tools/train_net.py --config-file configs/ssd_r34_shapes.yaml --num-gpus 2 \
        --dataset-coco mine_train train.json images/ --dataset-coco mine_val val.json images/ \
        DATASETS.TRAIN "('mine_train',)" DATASETS.TEST "('mine_val',)" MODEL.SSD.NUM_CLASSES 2
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssd_r34.cli.train import cli, get_parser, main  # noqa: E402,F401  (main, get_parser: for callers)

if __name__ == "__main__":
    cli()
