#!/usr/bin/env python
"""Train or evaluate a LazyConfig of ssd_r34 (configs/*.py).
The code: ssd_r34/cli/lazyconfig_train_net.py; usage: docs/tools.md."""
from ssd_r34.cli.lazyconfig_train_net import main

if __name__ == "__main__":
    main()
