"""Training and evaluation with Detectron2's DefaultTrainer, SSD mappers and COCOEvaluator."""
import logging
import os
import weakref

import torch
from torch.nn.parallel import DistributedDataParallel

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, default_setup
from detectron2.evaluation import COCOEvaluator
from detectron2.solver import build_optimizer, get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from .config import get_ssd_cfg
from .data import SSDDatasetMapper, ensure_dataset

logger = logging.getLogger(__name__)


def create_ddp_model(model, **kwargs):
    """Detectron2's create_ddp_model, but without device ids for a CPU model (gloo):
    DistributedDataParallel refuses device ids for modules that are not on a GPU."""
    if comm.get_world_size() == 1:
        return model
    if next(model.parameters()).device.type == "cuda":
        kwargs.setdefault("device_ids", [comm.get_local_rank()])
    return DistributedDataParallel(model, **kwargs)


class SSDTrainer(DefaultTrainer):
    """DefaultTrainer with the SSD data mappers, COCO evaluation, a configurable
    optimizer (SOLVER.OPTIMIZER) and DDP on CPU as well as on GPUs."""

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(
            model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR,
                                                  trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_optimizer(cls, cfg, model):
        name = cfg.SOLVER.OPTIMIZER
        if name == "SGD":
            return build_optimizer(cfg, model)
        if name == "AdamW":
            params = get_default_optimizer_params(
                model, base_lr=cfg.SOLVER.BASE_LR, weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
                bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
                weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS)
            return maybe_add_gradient_clipping(cfg, torch.optim.AdamW(
                params, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS),
                weight_decay=cfg.SOLVER.WEIGHT_DECAY))
        raise ValueError(f"SOLVER.OPTIMIZER must be 'SGD' or 'AdamW', got {name!r}.")

    @classmethod
    def build_train_loader(cls, cfg):
        for name in cfg.DATASETS.TRAIN:
            ensure_dataset(name)
        return build_detection_train_loader(cfg, mapper=SSDDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        ensure_dataset(dataset_name)
        return build_detection_test_loader(cfg, dataset_name,
                                           mapper=SSDDatasetMapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        ensure_dataset(dataset_name)
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(dataset_name, output_dir=output_folder)


def setup_cfg(args):
    """Config from ``--config-file`` and trailing ``KEY VALUE`` overrides, frozen."""
    cfg = get_ssd_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.DEVICE == "cpu" and cfg.MODEL.RESNETS.NORM == "SyncBN":
        # torch.nn.SyncBatchNorm runs on GPUs only; Detectron2's naive SyncBN is the same
        # computation over any process group (gloo on CPU).
        cfg.MODEL.RESNETS.NORM = "naiveSyncBN"
        logger.warning("MODEL.DEVICE is cpu: MODEL.RESNETS.NORM SyncBN runs as naiveSyncBN.")
    cfg.freeze()
    return cfg


def setup(args):
    """setup_cfg + Detectron2's default_setup (logging, output folder, seeds)."""
    cfg = setup_cfg(args)
    default_setup(cfg, args)
    return cfg
