"""Training and evaluation with Detectron2's DefaultTrainer, SSD mappers and COCOEvaluator."""
import logging
import os
import weakref

import torch
from torch.nn.parallel import DistributedDataParallel

from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, TrainerBase, default_setup, hooks
from detectron2.evaluation import COCOEvaluator, verify_results
from detectron2.solver import build_optimizer, get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.events import EventStorage
from detectron2.utils.logger import setup_logger

from .atomic_io import make_checkpointer_atomic
from .checkpoint import SSDCheckpointer
from .config import get_ssd_cfg
from .data import SSDDatasetMapper, ensure_dataset
from .hooks import DataProgressHook, EvalAndStopHook, ReplicaCheckHook
from .resumable_loader import build_resumable_train_loader
from .train_loop import build_step_trainer

logger = logging.getLogger(__name__)


def create_ddp_model(model, **kwargs):
    """Detectron2's create_ddp_model, but without device ids for a CPU model (gloo):
    DistributedDataParallel refuses device ids for modules that are not on a GPU."""
    if comm.get_world_size() == 1:
        return model
    if next(model.parameters()).device.type == "cuda":
        kwargs.setdefault("device_ids", [comm.get_local_rank()])
    return DistributedDataParallel(model, **kwargs)


class SSDCOCOEvaluator(COCOEvaluator):
    """COCOEvaluator that ignores detections of class ids the data set does not have (the
    80-class MLPerf model evaluated on the 3-class shapes set), with a warning, where
    COCOEvaluator would stop on an assertion."""

    def process(self, inputs, outputs):
        num_classes = len(self._metadata.get("thing_classes", None) or [])
        if num_classes:
            for out in outputs:
                inst = out.get("instances")
                keep = None if inst is None else inst.pred_classes < num_classes
                if keep is not None and not bool(keep.all()):
                    if not getattr(self, "_warned_classes", False):
                        self._warned_classes = True
                        logger.warning(
                            f"The model predicts class ids >= {num_classes}, but the data set "
                            f"{self._metadata.name} has {num_classes} classes: those detections"
                            " are ignored in its evaluation.")
                    out["instances"] = inst[keep]
        super().process(inputs, outputs)


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
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False)
        self._trainer = build_step_trainer(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = SSDCheckpointer(model, cfg.OUTPUT_DIR,
                                           trainer=weakref.proxy(self))
        # Checkpoint files and last_checkpoint are written atomically (whatever the class).
        make_checkpointer_atomic(self.checkpointer)
        self._stop_requested = False
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
        """A loader whose progress is stored in checkpoints and continued by ``--resume``
        (ssd_r34/resumable_loader.py) for DATALOADER.SAMPLER_TRAIN TrainingSampler;
        Detectron2's own loader (restarting its stream on resume) for other samplers."""
        for name in cfg.DATASETS.TRAIN:
            ensure_dataset(name)
        mapper = SSDDatasetMapper(cfg, is_train=True)
        if cfg.DATALOADER.SAMPLER_TRAIN == "TrainingSampler":
            return build_resumable_train_loader(cfg, mapper)
        logger.warning(f"DATALOADER.SAMPLER_TRAIN {cfg.DATALOADER.SAMPLER_TRAIN}: --resume "
                       "restarts the data stream from its beginning.")
        return build_detection_train_loader(cfg, mapper=mapper)

    def build_hooks(self):
        """DefaultTrainer's hooks, with EvalHook replaced by :class:`EvalAndStopHook`
        (TEST.EVAL_PERIOD, TEST.EVAL_ITERS, TEST.TARGET_AP), a :class:`DataProgressHook`
        first (so that checkpoints count the step they are taken at) and a
        :class:`ReplicaCheckHook` (SOLVER.CHECK_REPLICAS)."""
        cfg = self.cfg
        ret = super().build_hooks()

        def test_and_save_results():
            self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        ret = [EvalAndStopHook(cfg.TEST.EVAL_PERIOD, test_and_save_results,
                               eval_iters=cfg.TEST.EVAL_ITERS, target_ap=cfg.TEST.TARGET_AP)
               if type(h) is hooks.EvalHook else h for h in ret]
        ret.insert(0, DataProgressHook(cfg.SOLVER.IMS_PER_BATCH))
        if cfg.SOLVER.CHECK_REPLICAS:
            ret.append(ReplicaCheckHook(self.model))
        return ret

    def request_stop(self):
        """End training after the current step (EvalAndStopHook calls this when the target
        AP is reached); from ``before_train``, train no step at all."""
        self._stop_requested = True

    def train(self):
        """DefaultTrainer.train, with a loop that can stop early (:meth:`request_stop`).
        After an early stop ``max_iter`` is the number of iterations run, so hooks see a
        finished training."""
        start_iter, max_iter = self.start_iter, self.max_iter
        logger.info(f"Starting training from iteration {start_iter}")
        self.iter = self.start_iter = start_iter
        self._stop_requested = False
        with EventStorage(start_iter) as self.storage:
            try:
                self.before_train()
                if self._stop_requested:
                    self.iter = self.max_iter = start_iter
                else:
                    for self.iter in range(start_iter, max_iter):
                        self.before_step()
                        self.run_step()
                        self.after_step()
                        if self._stop_requested:
                            self.max_iter = self.iter + 1
                            break
                    self.iter += 1
            except Exception:
                logger.exception("Exception during training:")
                raise
            finally:
                self.after_train()
        if len(self.cfg.TEST.EXPECTED_RESULTS) and comm.is_main_process():
            assert hasattr(self, "_last_eval_results"), \
                "No evaluation results obtained during training!"
            verify_results(self.cfg, self._last_eval_results)
            return self._last_eval_results

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
        return SSDCOCOEvaluator(dataset_name, output_dir=output_folder)


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
    # ssd_r34's own messages in the console and in OUTPUT_DIR/log.txt(.rankN) too.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="ssd_r34")
    return cfg
