# Uneven input: 800 high, 1200 wide, strides 2 2 2 2 1 1, SyncBN (as ssd_r34_800x1200.yaml).
from .base_ssd_r34 import dataloader, lr_multiplier, model, optimizer, train

SIZE = (800, 1200)
model.input_size = SIZE
model.backbone.strides = (2, 2, 2, 2, 1, 1)
model.backbone.norm = "SyncBN"
model.head.stride = 2
dataloader.train.mapper.augmentations.size = SIZE
dataloader.test.mapper.augmentations.size = SIZE
train.output_dir = "./output/ssd_r34_800x1200"
