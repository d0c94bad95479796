#!/usr/bin/env python
"""Plot a training run's losses, learning rate and box AP.
The code: ssd_r34/cli/plot_metrics.py; usage: docs/tools.md."""
from ssd_r34.cli.plot_metrics import main

if __name__ == "__main__":
    main()
