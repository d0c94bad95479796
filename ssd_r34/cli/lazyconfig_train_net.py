"""Train or evaluate a LazyConfig (configs/*.py) as Detectron2's lazyconfig_train_net.py, with
ssd_r34's checkpointer, DDP and evaluation hook (``ssd-r34-lazy-train``; docs/lazyconfig.md)."""
import logging

from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (AMPTrainer, SimpleTrainer, default_argument_parser,
                               default_setup, default_writers, hooks)
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

from ..checkpoint import SSDCheckpointer, make_checkpointer_atomic
from ..data import ensure_shapes
from ..engine import EvalAndStopHook, create_ddp_model
from . import args as cli

logger = logging.getLogger("ssd_r34")


def _ensure_datasets(dataset_cfg):
    for name in [dataset_cfg.names] if isinstance(dataset_cfg.names, str) else dataset_cfg.names:
        ensure_shapes(name)


def do_test(cfg, model):
    """COCO evaluation of ``model`` on ``cfg.dataloader.test`` with ``cfg.dataloader.evaluator``.

    Returns:
        dict: Detectron2's results ({"bbox": {"AP": ...}}), or {} without an evaluator.
    """
    if "evaluator" not in cfg.dataloader:
        return {}
    _ensure_datasets(cfg.dataloader.test.dataset)
    ret = inference_on_dataset(model, instantiate(cfg.dataloader.test),
                               instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process():
        print_csv_format(ret)
    return ret


def do_train(args, cfg):
    """Detectron2's LazyConfig training loop. Returns: the trainer."""
    model = instantiate(cfg.model)
    logger.info("Model:\n{}".format(model))
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    _ensure_datasets(cfg.dataloader.train.dataset)
    train_loader = instantiate(cfg.dataloader.train)
    model = create_ddp_model(model, **cfg.train.ddp)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, train_loader, optim)
    checkpointer = make_checkpointer_atomic(
        SSDCheckpointer(model, cfg.train.output_dir, trainer=trainer))
    main_process = comm.is_main_process()
    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if main_process
        else None,
        EvalAndStopHook(cfg.train.eval_period, lambda: do_test(cfg, model),
                        eval_iters=cfg.train.get("eval_iters", ())),
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter),
                             period=cfg.train.log_period) if main_process else None,
    ])
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)  # PeriodicCheckpointer saves model_final
    return trainer


def run(args):
    """Detectron2's ``main(args)``, in every process. Returns: the results or the trainer."""
    args.config_file = cli.resolve_config_file(args.config_file)
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    default_setup(cfg, args)
    if args.eval_only:
        model = create_ddp_model(instantiate(cfg.model).to(cfg.train.device))
        SSDCheckpointer(model).load(cfg.train.init_checkpoint)
        return do_test(cfg, model)
    return do_train(args, cfg)


def get_parser():
    return default_argument_parser()


def main(argv=None):
    return cli.launch_main(run, get_parser().parse_args(argv))


def cli_main():
    """Console script ``ssd-r34-lazy-train``."""
    main()
