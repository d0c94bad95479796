"""Train or evaluate SSD-ResNet34 with Detectron2's command line (``ssd-r34-train``,
tools/train_net.py; docs/tools.md)."""
from detectron2.engine import default_argument_parser
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from ..checkpoint import SSDCheckpointer
from ..engine import SSDTrainer, setup
from ..export import attach_backend
from . import args as cli


def run(args):
    """Detectron2's ``main(args)`` of train_net.py, run in every process.

    Returns:
        the evaluation results (``--eval-only``, or after training when evaluated).
    """
    cfg = setup(args)
    if args.eval_only:
        model = SSDTrainer.build_model(cfg)
        # reads Detectron2 checkpoints and, converting them, MLPerf / torchvision files
        SSDCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume)
        attach_backend(model, cfg)  # MODEL.SSD.INFERENCE_BACKEND / INFERENCE_DTYPE
        res = SSDTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = SSDTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def get_parser():
    """Detectron2's ``default_argument_parser`` with the data set options and bare overrides."""
    d2 = default_argument_parser()
    p = cli.ArgumentParser(description=__doc__.split("\n")[0], epilog=d2.epilog,
                           formatter_class=d2.formatter_class,
                           parents=[d2], add_help=False)
    return cli.add_common_arguments(p)


def main(argv=None):
    """Returns: what :func:`run` returns (None with several processes)."""
    args = get_parser().parse_args(argv)
    args.config_file = cli.resolve_config_file(args.config_file)
    return cli.launch_main(run, args)


def cli_main():
    """Console script ``ssd-r34-train`` and train_regime's ``python -m ssd_r34.cli.train_net``."""
    main()


if __name__ == "__main__":
    cli_main()
