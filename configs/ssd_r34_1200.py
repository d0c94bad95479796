# The MLPerf inference v0.5 model: 1200x1200, strides 3 3 2 2 2 2, SyncBN (as ssd_r34_1200.yaml).
from .base_ssd_r34 import dataloader, lr_multiplier, model, optimizer, train

SIZE = (1200, 1200)
model.input_size = SIZE
model.backbone.strides = (3, 3, 2, 2, 2, 2)
model.backbone.norm = "SyncBN"
model.head.stride = 3
dataloader.train.mapper.augmentations.size = SIZE
dataloader.test.mapper.augmentations.size = SIZE
train.eval_iters = (1000, 10000, 40000, 80000, 120000, 160000, 180000, 200000, 220000, 240000)
train.output_dir = "./output/ssd_r34_1200"
