"""SSD-ResNet34 (MLPerf) as a LazyConfig, built from the yaml config of the same name: the
yaml files are the one source of the settings, ``from_yaml`` maps their keys onto LazyCall
of ssd_r34's classes (docs/lazyconfig.md). This file is Base-SSD-R34.yaml."""
import os

import torch
from fvcore.common.param_scheduler import MultiStepParamScheduler

from detectron2.config import LazyCall as L
from detectron2.data import (build_detection_test_loader, build_detection_train_loader,
                             get_detection_dataset_dicts)
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.solver import WarmupParamScheduler
from detectron2.solver.build import get_default_optimizer_params

from ssd_r34.config import get_ssd_cfg
from ssd_r34.data import SSDDatasetMapper, ssd_augmentations
from ssd_r34.engine import SSDCOCOEvaluator
from ssd_r34.modeling import SSD, SSDAnchorGenerator, SSDHead
from ssd_r34.modeling.backbone import ssd_resnet34

# channels of the backbone's six outputs (res4, extra0 .. extra4)
CHANNELS = [256, 512, 512, 256, 256, 256]


def from_yaml(name):
    """(model, dataloader, optimizer, lr_multiplier, train) of the yaml config ``name``
    (a file beside this one), as SSDTrainer builds them."""
    cfg = get_ssd_cfg()
    cfg.merge_from_file(os.path.join(os.path.dirname(__file__), name))
    S, size = cfg.MODEL.SSD, list(cfg.INPUT.FIXED_SIZE)
    model = L(SSD)(
        backbone=L(ssd_resnet34)(strides=list(S.STRIDES), norm=cfg.MODEL.RESNETS.NORM,
                                 stem_out_channels=cfg.MODEL.RESNETS.STEM_OUT_CHANNELS,
                                 freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT, winograd=S.WINOGRAD,
                                 depth=cfg.MODEL.RESNETS.DEPTH),
        head=L(SSDHead)(in_channels=CHANNELS,
                        num_anchors=[2 + 2 * len(r) for r in S.DEFAULT_BOX_RATIOS],
                        num_classes=S.NUM_CLASSES, stride=S.STRIDES[0],
                        sparse_backward=S.SPARSE_HEAD_BACKWARD),
        anchor_generator=L(SSDAnchorGenerator)(box_sizes=list(S.DEFAULT_BOX_SIZES),
                                               aspect_ratios=list(S.DEFAULT_BOX_RATIOS)),
        box2box_transform=L(Box2BoxTransform)(weights=tuple(S.BBOX_REG_WEIGHTS)),
        num_classes=S.NUM_CLASSES, input_size=size, iou_threshold=S.IOU_THRESHOLD,
        neg_pos_ratio=S.NEG_POS_RATIO, test_score_thresh=S.SCORE_THRESH_TEST,
        test_topk_candidates=S.TOPK_CANDIDATES_TEST, test_nms_thresh=S.NMS_THRESH_TEST,
        max_detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        channels_last=S.CHANNELS_LAST, fuse_bn_inference=S.FUSE_BN_INFERENCE,
        onednn_post_ops=S.ONEDNN_POST_OPS, inference_dtype=S.INFERENCE_DTYPE,
        pixel_mean=list(cfg.MODEL.PIXEL_MEAN), pixel_std=list(cfg.MODEL.PIXEL_STD))

    def loader(split, names, **kw):
        train = split == "train"
        return L(build_detection_train_loader if train else build_detection_test_loader)(
            dataset=L(get_detection_dataset_dicts)(
                names=names[0] if len(names) == 1 else list(names),
                filter_empty=train and cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS),
            mapper=L(SSDDatasetMapper)(
                is_train=train, image_format=cfg.INPUT.FORMAT,
                augmentations=L(ssd_augmentations)(
                    size=size, is_train=train, crop=cfg.INPUT.SSD.CROP,
                    flip=cfg.INPUT.RANDOM_FLIP == "horizontal",
                    color_jitter=list(cfg.INPUT.SSD.COLOR_JITTER))),
            num_workers=cfg.DATALOADER.NUM_WORKERS, **kw)

    dataloader = dict(
        train=loader("train", cfg.DATASETS.TRAIN, total_batch_size=cfg.SOLVER.IMS_PER_BATCH),
        test=loader("test", cfg.DATASETS.TEST or ("",)),
        evaluator=L(SSDCOCOEvaluator)(dataset_name="${..test.dataset.names}"))

    O = cfg.SOLVER
    params = L(get_default_optimizer_params)(
        base_lr=O.BASE_LR, weight_decay_norm=O.WEIGHT_DECAY_NORM,
        bias_lr_factor=O.BIAS_LR_FACTOR, weight_decay_bias=O.WEIGHT_DECAY_BIAS)
    optimizer = (L(torch.optim.AdamW)(params=params, lr=O.BASE_LR, betas=list(O.BETAS),
                                      weight_decay=O.WEIGHT_DECAY)
                 if O.OPTIMIZER == "AdamW" else
                 L(torch.optim.SGD)(params=params, lr=O.BASE_LR, momentum=O.MOMENTUM,
                                    nesterov=O.NESTEROV, weight_decay=O.WEIGHT_DECAY))
    lr_multiplier = L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(
            values=[O.GAMMA ** k for k in range(len(O.STEPS) + 1)], milestones=list(O.STEPS),
            num_updates=O.MAX_ITER),
        warmup_length=min(O.WARMUP_ITERS / O.MAX_ITER, 1.0), warmup_factor=O.WARMUP_FACTOR,
        warmup_method=O.WARMUP_METHOD)
    train = dict(
        output_dir=cfg.OUTPUT_DIR, init_checkpoint=cfg.MODEL.WEIGHTS, max_iter=O.MAX_ITER,
        amp=dict(enabled=O.AMP.ENABLED),
        ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
        checkpointer=dict(period=O.CHECKPOINT_PERIOD, max_to_keep=100),
        eval_period=cfg.TEST.EVAL_PERIOD, eval_iters=list(cfg.TEST.EVAL_ITERS), log_period=20,
        device=cfg.MODEL.DEVICE, seed=cfg.SEED)
    return model, dataloader, optimizer, lr_multiplier, train


model, dataloader, optimizer, lr_multiplier, train = from_yaml("Base-SSD-R34.yaml")
