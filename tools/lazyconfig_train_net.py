#!/usr/bin/env python
"""Train or evaluate a LazyConfig of ssd_r34 (configs/*.py), as Detectron2's
tools/lazyconfig_train_net.py (``ssd-r34-lazy-train`` once installed; the code is
ssd_r34/cli/lazy_train.py, docs/lazyconfig.md).

    tools/lazyconfig_train_net.py --config-file configs/ssd_r34_shapes.py
    tools/lazyconfig_train_net.py --config-file configs/ssd_r34_1200.py --eval-only \
        train.init_checkpoint=resnet34-ssd1200.pytorch
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssd_r34.cli.lazy_train import cli  # noqa: E402

if __name__ == "__main__":
    cli()
