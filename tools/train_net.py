#!/usr/bin/env python
"""Train or evaluate SSD-ResNet34 (Detectron2's train_net.py).
The code: ssd_r34/cli/train_net.py; usage: docs/tools.md."""
from ssd_r34.cli.train_net import main

if __name__ == "__main__":
    main()
