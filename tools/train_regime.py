#!/usr/bin/env python
"""Run the three-stage MLPerf training regime.
The code: ssd_r34/cli/train_regime.py; usage: docs/tools.md."""
import sys

from ssd_r34.cli.train_regime import main

if __name__ == "__main__":
    sys.exit(main())
