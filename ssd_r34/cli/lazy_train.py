"""Train or evaluate a LazyConfig (configs/*.py) of ssd_r34: Detectron2's
``tools/lazyconfig_train_net.py`` with ssd_r34's trainer pieces (``ssd-r34-lazy-train``,
tools/lazyconfig_train_net.py).

    ssd-r34-lazy-train --config-file configs/ssd_r34_shapes.py
    ssd-r34-lazy-train --config-file configs/ssd_r34_1200.py --num-gpus 8
    ssd-r34-lazy-train --config-file configs/ssd_r34_1200.py --eval-only \
        train.init_checkpoint=resnet34-ssd1200.pytorch

Overrides are LazyConfig's ``key=value``. From ssd_r34 it uses: the checkpointer that reads
MLPerf / torchvision files and writes checkpoints atomically, DDP without device ids on CPU,
evaluation at ``train.eval_period`` and after each of ``train.eval_iters`` (EvalAndStopHook),
the built-in data sets generated on first use. Not here (tools/train_net.py has them): the
resumable data stream, the early stop at a target AP, CPU mixed precision, MLPerf logs.
"""
import logging
import os

from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (AMPTrainer, SimpleTrainer, default_argument_parser,
                               default_setup, default_writers, hooks, launch)
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

from ..checkpoint import SSDCheckpointer, make_checkpointer_atomic
from ..data import ensure_dataset
from ..engine import EvalAndStopHook, create_ddp_model

logger = logging.getLogger("ssd_r34")


def _names(dataset_cfg):
    names = dataset_cfg.names
    return [names] if isinstance(names, str) else list(names)


def do_test(cfg, model):
    """COCO evaluation of ``model`` on ``cfg.dataloader.test`` with ``cfg.dataloader.evaluator``.

    Returns:
        dict: Detectron2's results ({"bbox": {"AP": ...}}), or {} without an evaluator.
    """
    if "evaluator" not in cfg.dataloader:
        return {}
    for name in _names(cfg.dataloader.test.dataset):
        ensure_dataset(name)
    ret = inference_on_dataset(model, instantiate(cfg.dataloader.test),
                               instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process():
        print_csv_format(ret)
    return ret


def do_train(args, cfg):
    """Detectron2's LazyConfig training loop (SimpleTrainer / AMPTrainer) with ssd_r34's
    checkpointer, DDP and evaluation hook."""
    model = instantiate(cfg.model)
    logger.info("Model:\n{}".format(model))
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    for name in _names(cfg.dataloader.train.dataset):
        ensure_dataset(name)
    train_loader = instantiate(cfg.dataloader.train)
    model = create_ddp_model(model, **cfg.train.ddp)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, train_loader, optim)
    checkpointer = make_checkpointer_atomic(
        SSDCheckpointer(model, cfg.train.output_dir, trainer=trainer))
    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
        if comm.is_main_process() else None,
        EvalAndStopHook(cfg.train.eval_period, lambda: do_test(cfg, model),
                        eval_iters=cfg.train.get("eval_iters", ())),
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter),
                             period=cfg.train.log_period) if comm.is_main_process() else None,
    ])
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)  # PeriodicCheckpointer saves model_final
    return trainer


def main(args):
    if not os.path.exists(args.config_file):
        from ..model_zoo import get_config_file

        args.config_file = get_config_file(args.config_file)
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    default_setup(cfg, args)
    if args.eval_only:
        model = instantiate(cfg.model).to(cfg.train.device)
        model = create_ddp_model(model)
        SSDCheckpointer(model).load(cfg.train.init_checkpoint)
        return do_test(cfg, model)
    return do_train(args, cfg)


def cli(argv=None):
    """Console script ``ssd-r34-lazy-train``."""
    args = default_argument_parser().parse_args(argv)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
