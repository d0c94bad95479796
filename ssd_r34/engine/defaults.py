"""SSDTrainer: Detectron2's DefaultTrainer with SSD's data, evaluation, optimizer, mixed
precision on CPU and GPU, an MLPerf-style early stop and crash-safe, resumable checkpoints."""
import logging
import os
import re
import time
import weakref

import torch
from torch.nn.parallel import DistributedDataParallel

from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, TrainerBase, default_setup, hooks
from detectron2.solver import build_optimizer, get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import SSDCheckpointer, make_checkpointer_atomic
from ..config import setup_cfg
from ..data import (SSDDatasetMapper, build_resumable_train_loader, dataset_metadata,
                    ensure_dataset, register_dataset_files)
from ..data.loader import SkipUnreadableImages, load_train_dicts
from .evaluation import SSDCOCOEvaluator
from .hooks import DataProgressHook, EvalAndStopHook, ReplicaCheckHook, bbox_ap
from .mllog_hook import MLPerfLoggingHook, mlperf_log_path
from .train_loop import build_step_trainer

logger = logging.getLogger(__name__)

__all__ = ["SSDTrainer", "create_ddp_model", "setup", "setup_cfg", "plain_logs_off_terminal"]


def create_ddp_model(model, **kwargs):
    """Detectron2's ``create_ddp_model``, but without device ids for a CPU model (gloo):
    DistributedDataParallel refuses device ids for modules that are not on a GPU."""
    if comm.get_world_size() == 1:
        return model
    if next(model.parameters()).device.type == "cuda":
        kwargs.setdefault("device_ids", [comm.get_local_rank()])
    return DistributedDataParallel(model, **kwargs)


class SSDTrainer(DefaultTrainer):
    """DefaultTrainer with the SSD data mappers, COCO evaluation, a configurable
    optimizer (SOLVER.OPTIMIZER) and DDP on CPU as well as on GPUs.

    For long and distributed runs it also has: mixed precision on CUDA (fp16 / bf16) and
    CPU (bf16), SOLVER.AMP.*; evaluation after TEST.EVAL_ITERS and an early stop at
    TEST.TARGET_AP (MLPerf style, recorded in metrics.json); crash-safe checkpoint files;
    a data stream that ``--resume`` continues where the checkpoint was taken; and a check
    that all ranks end with identical weights (SOLVER.CHECK_REPLICAS).
    """

    def __init__(self, cfg):
        # Mirrors detectron2.engine.defaults.DefaultTrainer.__init__ (same steps, same order;
        # tests/test_structure.py fails if upstream's signature or steps change). A copy
        # because three of its lines differ and none is a method to override: DDP without
        # device ids on CPU (upstream's create_ddp_model always passes them, which
        # DistributedDataParallel refuses for CPU modules), the step trainer
        # (build_step_trainer: CPU bfloat16 autocast, the float16 / bfloat16 choice on CUDA)
        # and the checkpointer (SSDCheckpointer: MLPerf / torchvision files, atomic writes).
        TrainerBase.__init__(self)
        self._init_time_ms = time.time() * 1e3  # MLPERF.LOG_FILE's init_start
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False)
        self._trainer = build_step_trainer(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = make_checkpointer_atomic(
            SSDCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self._stop_requested = False
        self.register_hooks(self.build_hooks())

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
        """A loader whose progress is stored in checkpoints and continued by ``--resume``
        (:mod:`ssd_r34.data.loader`) for DATALOADER.SAMPLER_TRAIN TrainingSampler;
        Detectron2's own loader (restarting its stream on resume) for other samplers."""
        for name in cfg.DATASETS.TRAIN:
            ensure_dataset(name)
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
        ensure_dataset(dataset_name)
        return build_detection_test_loader(cfg, dataset_name,
                                           mapper=SSDDatasetMapper(cfg, is_train=False,
                                                                  dataset_name=dataset_name))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        register_dataset_files(cfg)
        dataset_metadata(dataset_name)  # class names and category ids from the json if needed
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return SSDCOCOEvaluator(dataset_name, output_dir=output_folder)

    def build_hooks(self):
        """DefaultTrainer's hooks, with EvalHook replaced by :class:`EvalAndStopHook`
        (TEST.EVAL_PERIOD, TEST.EVAL_ITERS, TEST.TARGET_AP), a :class:`DataProgressHook`
        first (so that checkpoints count the step they are taken at) and a
        :class:`ReplicaCheckHook` (SOLVER.CHECK_REPLICAS) and, on rank 0, an
        :class:`MLPerfLoggingHook` last (MLPERF.LOG_FILE)."""
        cfg = self.cfg
        ret = super().build_hooks()
        path = mlperf_log_path(cfg)
        mllog = (MLPerfLoggingHook(cfg, path, init_time_ms=getattr(self, "_init_time_ms", None))
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
        if mllog is not None:
            ret.append(mllog)
        return ret

    # ---- early stop ------------------------------------------------------------------
    # Detectron2's training loop runs ``range(start_iter, max_iter)``. After
    # :meth:`request_stop` the remaining iterations of that loop do nothing (no step, no
    # hooks), and ``max_iter`` becomes the number of iterations run, so that the hooks'
    # ``after_train`` sees a finished training.
    def request_stop(self):
        """End training after the current step (EvalAndStopHook calls this when the target
        AP is reached); from ``before_train``, train no step at all."""
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
        if self._stop_requested:
            return
        super().after_step()
        if self._stop_requested:
            self.max_iter = self.iter + 1

    def after_train(self):
        if self._stop_requested:
            self.iter = self.max_iter
        super().after_train()


def setup(args):
    """:func:`ssd_r34.config.setup_cfg` + Detectron2's ``default_setup`` (logging, output
    folder, seeds); ssd_r34's own messages go to the console and OUTPUT_DIR/log.txt too,
    without colour codes in the file (nor on a stdout that is not a terminal); the data sets
    of DATASETS.COCO / DATASETS.VOC (``--dataset-coco`` ...) are registered in this process."""
    cfg = setup_cfg(args)
    register_dataset_files(cfg)  # before default_setup: a bad entry fails before any output
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="ssd_r34")
    # The loggers exist before default_setup logs the (colour-highlighted) config dump.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="fvcore")
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank())
    plain_logs_off_terminal()
    default_setup(cfg, args)
    return cfg


# ---- plain logs ---------------------------------------------------------------------------
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _PlainFormatter(logging.Formatter):
    """Another formatter's output without ANSI colour codes."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def format(self, record):
        return _ANSI.sub("", self.inner.format(record))


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def plain_logs_off_terminal(names=("detectron2", "fvcore", "ssd_r34")):
    """Remove ANSI colour codes from what the loggers ``names`` write to anything but a
    terminal: log files (Detectron2 colours the config dump of ``default_setup`` in the
    message itself) and a redirected stdout (its coloured console formatter). Idempotent."""
    for name in names:
        for h in logging.getLogger(name).handlers:
            stream = getattr(h, "stream", None)
            if stream is None or _is_terminal(stream) or isinstance(h.formatter, _PlainFormatter):
                continue
            h.setFormatter(_PlainFormatter(h.formatter or logging.Formatter()))
