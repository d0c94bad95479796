# The built-in shapes data set (3 classes), 160x160, strides 1 1 2 1 1 1, AdamW with warm-up,
# on CPU (as ssd_r34_shapes.yaml).
import torch

from detectron2.config import LazyCall as L
from detectron2.solver.build import get_default_optimizer_params

from .base_ssd_r34 import dataloader, lr_multiplier, model, optimizer, train

SIZE = (160, 160)
model.input_size = SIZE
model.num_classes = 3
model.head.num_classes = 3
model.backbone.strides = (1, 1, 2, 1, 1, 1)
for split, names in (("train", "shapes_train"), ("test", "shapes_val")):
    dataloader[split].dataset.names = names
    dataloader[split].mapper.augmentations.size = SIZE
    dataloader[split].num_workers = 1
dataloader.train.total_batch_size = 8

optimizer = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(weight_decay_norm=0.0),
    lr=0.001, betas=(0.9, 0.999), weight_decay=0.0001)
lr_multiplier.scheduler.values = [1.0, 0.1]
lr_multiplier.scheduler.milestones = [450]
lr_multiplier.scheduler.num_updates = 600
lr_multiplier.warmup_length = 50 / 600
lr_multiplier.warmup_factor = 0.01

train.max_iter = 600
train.checkpointer.period = 600
train.device = "cpu"
train.seed = 42
train.output_dir = "./output/ssd_r34_shapes"
