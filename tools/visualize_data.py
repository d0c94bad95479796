#!/usr/bin/env python
"""Draw a data set's ground truth, or what the training mapper makes of it.
The code: ssd_r34/cli/visualize_data.py; usage: docs/tools.md."""
from ssd_r34.cli.visualize_data import main

if __name__ == "__main__":
    main()
