#!/usr/bin/env python
"""Convert an MLPerf SSD-ResNet34 checkpoint into a Detectron2 checkpoint for ssd_r34
(``ssd-r34-convert-mlperf`` once installed; the code is ssd_r34/cli/convert_mlperf.py).

    tools/convert_mlperf_to_d2.py resnet34-ssd1200.pytorch ssd_r34_mlperf1200.pth
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssd_r34.cli.convert_mlperf import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
