#!/usr/bin/env python
"""Run SSD-ResNet34 on images and draw the detections.
The code: ssd_r34/cli/demo.py; usage: docs/tools.md."""
import sys

from ssd_r34.cli.demo import main

if __name__ == "__main__":
    sys.exit(0 if main()["written"] else 1)
