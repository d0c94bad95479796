# ssd_r34_800x1200.yaml as a LazyConfig (configs/base_ssd_r34.py, docs/lazyconfig.md).
from .base_ssd_r34 import from_yaml

model, dataloader, optimizer, lr_multiplier, train = from_yaml("ssd_r34_800x1200.yaml")
