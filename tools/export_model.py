#!/usr/bin/env python
"""Export to TorchScript / ONNX and check it. The code: ssd_r34/cli/export_model.py; usage:
docs/export.md."""
import sys

from ssd_r34.cli.export_model import get_parser, main  # noqa: F401  (get_parser: --help docs)

if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
