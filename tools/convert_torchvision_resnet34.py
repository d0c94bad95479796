#!/usr/bin/env python
"""Convert torchvision's ResNet-34 weights into an ssd_r34 backbone initialisation.
The code: ssd_r34/cli/convert_torchvision_resnet34.py; usage: docs/tools.md."""
import sys

from ssd_r34.cli.convert_torchvision_resnet34 import main

if __name__ == "__main__":
    sys.exit(main())
