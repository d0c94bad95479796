#!/usr/bin/env python
"""Run SSD-ResNet34 under MLPerf's LoadGen. The code: ssd_r34/cli/mlperf_inference.py; usage:
docs/mlperf_inference.md."""
import sys

from ssd_r34.cli.mlperf_inference import get_parser, main  # noqa: F401  (get_parser: --help docs)

if __name__ == "__main__":
    sys.exit(0 if main()[1] else 1)
