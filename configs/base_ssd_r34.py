"""SSD-ResNet34 (MLPerf) as a LazyConfig: the same model and defaults as Base-SSD-R34.yaml,
built by LazyCall on ssd_r34's classes. The files beside this one change what the yaml
files of the same name change (docs/lazyconfig.md)."""
import torch
from fvcore.common.param_scheduler import MultiStepParamScheduler

from detectron2.config import LazyCall as L
from detectron2.data import (build_detection_test_loader, build_detection_train_loader,
                             get_detection_dataset_dicts)
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.solver import WarmupParamScheduler
from detectron2.solver.build import get_default_optimizer_params

from ssd_r34.data import SSDDatasetMapper, ssd_augmentations
from ssd_r34.engine import SSDCOCOEvaluator
from ssd_r34.modeling import SSD, SSDAnchorGenerator, SSDHead
from ssd_r34.modeling.backbone import ssd_resnet34

# INPUT.FIXED_SIZE and MODEL.SSD.STRIDES of this file (the 300x300 model); the other files
# set each use of them (model.input_size, model.backbone.strides, model.head.stride, the
# mappers' augmentations.size).
model = L(SSD)(
    backbone=L(ssd_resnet34)(strides=(1, 1, 2, 2, 2, 1), norm="BN", stem_out_channels=64,
                             freeze_at=0, winograd=True),
    head=L(SSDHead)(in_channels=[256, 512, 512, 256, 256, 256],
                    num_anchors=[4, 6, 6, 6, 4, 4], num_classes=80, stride=1,
                    sparse_backward=True),
    anchor_generator=L(SSDAnchorGenerator)(
        box_sizes=[21, 45, 99, 153, 207, 261, 315],
        aspect_ratios=[[2], [2, 3], [2, 3], [2, 3], [2], [2]]),
    box2box_transform=L(Box2BoxTransform)(weights=(10.0, 10.0, 5.0, 5.0)),
    num_classes=80,
    input_size=(300, 300),
    iou_threshold=0.5,
    neg_pos_ratio=3,
    test_score_thresh=0.05,
    test_topk_candidates=200,
    test_nms_thresh=0.5,
    max_detections_per_image=200,
    channels_last=True,
    fuse_bn_inference=True,
    onednn_post_ops=True,
    inference_dtype="float32",
    # torchvision's ImageNet statistics, RGB, 0-255
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
)

dataloader = dict(
    train=L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names="coco_2017_train", filter_empty=True),
        mapper=L(SSDDatasetMapper)(
            is_train=True, image_format="RGB",
            augmentations=L(ssd_augmentations)(size=(300, 300), is_train=True)),
        total_batch_size=32,
        num_workers=4,
    ),
    test=L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names="coco_2017_val", filter_empty=False),
        mapper=L(SSDDatasetMapper)(
            is_train=False, image_format="RGB",
            augmentations=L(ssd_augmentations)(size=(300, 300), is_train=False)),
        num_workers=4,
    ),
    evaluator=L(SSDCOCOEvaluator)(dataset_name="${..test.dataset.names}"),
)

# SGD lr 1e-3, momentum 0.9, weight decay 5e-4 on every parameter (Base-SSD-R34.yaml).
optimizer = L(torch.optim.SGD)(
    params=L(get_default_optimizer_params)(weight_decay_norm=5e-4),
    lr=0.001,
    momentum=0.9,
    weight_decay=5e-4,
)

# lr x0.1 at 160k and 200k of 240k iterations, no warm-up.
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01],
                                         milestones=[160000, 200000], num_updates=240000),
    warmup_length=0.0,
    warmup_factor=0.001,
)

train = dict(
    output_dir="./output/ssd_r34_300",
    init_checkpoint="",   # MLPerf / torchvision / Detectron2 files (SSDCheckpointer)
    max_iter=240000,
    amp=dict(enabled=False),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=4000, max_to_keep=100),
    eval_period=0,
    # TEST.EVAL_ITERS: also evaluate after these numbers of iterations.
    eval_iters=(),
    log_period=20,
    device="cuda",
    seed=-1,
)
