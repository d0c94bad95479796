#!/usr/bin/env python
"""Parameters, FLOPs and activations of a config's model.
The code: ssd_r34/cli/analyze_model.py; usage: docs/tools.md."""
import sys

from ssd_r34.cli.analyze_model import main

if __name__ == "__main__":
    sys.exit(main())
