#!/usr/bin/env python
"""Calibrate the INT8 network once. The code: ssd_r34/cli/calibrate.py; usage: docs/int8.md."""
from ssd_r34.cli.calibrate import get_parser, main  # noqa: F401  (get_parser: --help docs)

if __name__ == "__main__":
    main()
