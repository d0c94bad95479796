# Stage 1 of the MLPerf regime: 300x300, strides 1 1 2 2 2 1 (as ssd_r34_300.yaml).
from .base_ssd_r34 import dataloader, lr_multiplier, model, optimizer, train

train.eval_iters = (1000, 10000, 40000, 80000, 120000, 160000, 180000, 200000, 220000, 240000)
train.output_dir = "./output/ssd_r34_300"
