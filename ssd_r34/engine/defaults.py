"""SSDTrainer: Detectron2's DefaultTrainer with SSD's data, evaluation, optimizer, mixed
precision on CPU and GPU, an MLPerf-style early stop and crash-safe, resumable checkpoints."""
import functools
import logging
import os
import re
import time
from unittest import mock

import torch

from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_setup, hooks
from detectron2.engine import defaults as d2_defaults
from detectron2.solver import build_optimizer, get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import SSDCheckpointer, make_checkpointer_atomic
from ..config import setup_cfg
from ..data import (SSDDatasetMapper, build_resumable_train_loader, dataset_metadata,
                    register_dataset_files)
from ..data.loader import SkipUnreadableImages, load_train_dicts
from .evaluation import SSDCOCOEvaluator
from .hooks import DataProgressHook, EvalAndStopHook, ReplicaCheckHook, bbox_ap
from .mllog_hook import MLPerfLoggingHook, mlperf_log_path
from .train_loop import build_step_trainer

logger = logging.getLogger(__name__)
_d2_create_ddp_model = d2_defaults.create_ddp_model


def create_ddp_model(model, **kwargs):
    """Detectron2's ``create_ddp_model``, without device ids for a CPU model (gloo), which
    DistributedDataParallel refuses."""
    if next(model.parameters()).device.type != "cuda":
        kwargs.setdefault("device_ids", None)
    return _d2_create_ddp_model(model, **kwargs)


class SSDTrainer(DefaultTrainer):
    """DefaultTrainer with the SSD data mappers, COCO evaluation, SOLVER.OPTIMIZER, DDP on
    CPU too, mixed precision on CUDA and CPU (SOLVER.AMP.*), evaluation after
    TEST.EVAL_ITERS with an early stop at TEST.TARGET_AP, atomic checkpoints, a data stream
    that ``--resume`` continues, a replica check (SOLVER.CHECK_REPLICAS) and MLPerf logs."""

    def __init__(self, cfg):
        self._init_time_ms = time.time() * 1e3  # MLPERF.LOG_FILE's init_start
        self._stop_requested = False
        # DefaultTrainer.__init__ builds these by module-level names, not methods: they are
        # ours for the call (tests/package/test_structure.py watches upstream).
        step = functools.partial(build_step_trainer, cfg)
        with mock.patch.multiple(
                d2_defaults, create_ddp_model=create_ddp_model,  # no device ids on CPU
                SimpleTrainer=step, AMPTrainer=step,  # CPU bfloat16, fp16 / bf16 on CUDA
                DetectionCheckpointer=lambda *a, **k: make_checkpointer_atomic(
                    SSDCheckpointer(*a, **k))):  # MLPerf / torchvision files, atomic writes
            super().__init__(cfg)

    @classmethod
    def build_optimizer(cls, cfg, model):
        """SOLVER.OPTIMIZER "SGD" (Detectron2's) or "AdamW" (SOLVER.BETAS)."""
        name = cfg.SOLVER.OPTIMIZER
        if name == "SGD":
            return build_optimizer(cfg, model)
        if name == "AdamW":
            params = get_default_optimizer_params(
                model, base_lr=cfg.SOLVER.BASE_LR, weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
                bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
                weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS)
            return maybe_add_gradient_clipping(cfg, torch.optim.AdamW)(
                params, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS),
                weight_decay=cfg.SOLVER.WEIGHT_DECAY)
        raise ValueError(f"SOLVER.OPTIMIZER must be 'SGD' or 'AdamW', got {name!r}.")

    @classmethod
    def build_train_loader(cls, cfg):
        """With DATALOADER.SAMPLER_TRAIN TrainingSampler, a loader whose progress checkpoints
        keep (ssd_r34/data/loader.py); Detectron2's, restarting on resume, otherwise."""
        names = list(cfg.DATASETS.TRAIN)
        mapper = SSDDatasetMapper(cfg, is_train=True,
                                  dataset_name=names[0] if len(names) == 1 else None)
        if cfg.DATALOADER.SAMPLER_TRAIN == "TrainingSampler":
            return build_resumable_train_loader(cfg, mapper)
        logger.warning(f"DATALOADER.SAMPLER_TRAIN {cfg.DATALOADER.SAMPLER_TRAIN}: --resume "
                       "restarts the data stream from its beginning.")
        if cfg.INPUT.SSD.SKIP_UNREADABLE_IMAGES:
            mapper = SkipUnreadableImages(mapper)
        return build_detection_train_loader(cfg, mapper=mapper,
                                            dataset=load_train_dicts(cfg)[0])

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        register_dataset_files(cfg)
        mapper = SSDDatasetMapper(cfg, is_train=False, dataset_name=dataset_name)
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        register_dataset_files(cfg)
        dataset_metadata(dataset_name)  # class names and category ids from the json if needed
        return SSDCOCOEvaluator(dataset_name, output_dir=output_folder or os.path.join(
            cfg.OUTPUT_DIR, "inference", dataset_name))

    def build_hooks(self):
        """DefaultTrainer's hooks with :class:`EvalAndStopHook` for its EvalHook, a
        :class:`DataProgressHook` first (checkpoints count the step they are taken at), a
        :class:`ReplicaCheckHook` and, on rank 0, an :class:`MLPerfLoggingHook` last."""
        cfg = self.cfg
        ret = super().build_hooks()
        path = mlperf_log_path(cfg)
        mllog = (MLPerfLoggingHook(cfg, path, init_time_ms=self._init_time_ms)
                 if path and comm.is_main_process() else None)

        def test_and_save_results():
            done = min(self.iter + 1, self.max_iter)  # after_step, or after_train
            if mllog is not None:
                mllog.eval_start(done)
            self._last_eval_results = self.test(self.cfg, self.model)
            if mllog is not None:
                mllog.eval_stop(done, bbox_ap(self._last_eval_results))
            return self._last_eval_results

        ret = [EvalAndStopHook(cfg.TEST.EVAL_PERIOD, test_and_save_results,
                               eval_iters=cfg.TEST.EVAL_ITERS, target_ap=cfg.TEST.TARGET_AP)
               if type(h) is hooks.EvalHook else h for h in ret]
        ret.insert(0, DataProgressHook(cfg.SOLVER.IMS_PER_BATCH))
        if cfg.SOLVER.CHECK_REPLICAS:
            ret.append(ReplicaCheckHook(self.model))
        return ret + ([mllog] if mllog is not None else [])

    # Early stop: Detectron2's loop runs range(start_iter, max_iter); after request_stop the
    # remaining iterations do nothing, and max_iter becomes the iterations run, so that the
    # hooks' after_train sees a finished training.
    def request_stop(self):
        """End training after the current step (from ``before_train``: before any step)."""
        self._stop_requested = True

    def before_train(self):
        self._stop_requested = False
        super().before_train()
        if self._stop_requested:
            self.max_iter = self.start_iter

    def before_step(self):
        if not self._stop_requested:
            super().before_step()

    def run_step(self):
        if not self._stop_requested:
            super().run_step()

    def after_step(self):
        if not self._stop_requested:
            super().after_step()
            if self._stop_requested:
                self.max_iter = self.iter + 1

    def after_train(self):
        if self._stop_requested:
            self.iter = self.max_iter
        super().after_train()


def setup(args):
    """:func:`ssd_r34.config.setup_cfg` + Detectron2's ``default_setup``, with ssd_r34's and
    fvcore's messages in OUTPUT_DIR/log.txt too, plain off a terminal; DATASETS.COCO / VOC
    are registered in this process.

    Returns:
        CfgNode: the frozen config.
    """
    cfg = setup_cfg(args)
    register_dataset_files(cfg)  # before default_setup: a bad entry fails before any output
    # before default_setup's (colour-highlighted) config dump, with its very arguments: the
    # loggers are cached by them
    rank = comm.get_rank()
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank, name="ssd_r34")
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank, name="fvcore")
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank)
    plain_logs_off_terminal()
    default_setup(cfg, args)
    return cfg


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _PlainFormatter(logging.Formatter):
    """Another formatter's output without ANSI colour codes."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def format(self, record):
        return _ANSI.sub("", self.inner.format(record))


def plain_logs_off_terminal(names=("detectron2", "fvcore", "ssd_r34")):
    """Remove ANSI colour codes from what the loggers ``names`` write to anything but a
    terminal (log files, a redirected stdout). Idempotent."""
    for name in names:
        for h in logging.getLogger(name).handlers:
            stream = getattr(h, "stream", None)
            try:
                tty = stream is None or stream.isatty()
            except (AttributeError, ValueError):
                tty = False
            if not tty and not isinstance(h.formatter, _PlainFormatter):
                h.setFormatter(_PlainFormatter(h.formatter or logging.Formatter()))
