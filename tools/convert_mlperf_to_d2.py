#!/usr/bin/env python
"""Convert an MLPerf SSD-ResNet34 checkpoint into a Detectron2 checkpoint.
The code: ssd_r34/cli/convert_mlperf_to_d2.py; usage: docs/tools.md."""
import sys

from ssd_r34.cli.convert_mlperf_to_d2 import main

if __name__ == "__main__":
    sys.exit(main())
