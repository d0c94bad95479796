"""Train or evaluate SSD-ResNet34 with Detectron2's usual command line (``ssd-r34-train``,
tools/train_net.py).

    ssd-r34-train --config-file configs/ssd_r34_1200.yaml --num-gpus 8
    ssd-r34-train --config-file configs/ssd_r34_1200.yaml --eval-only MODEL.WEIGHTS model.pth
    ssd-r34-train --config-file configs/ssd_r34_shapes.yaml MODEL.DEVICE cpu

``--config-file`` also takes a model-zoo name (``ssd_r34_shapes.yaml``) when no such file
exists here.
"""
import os

from detectron2.engine import default_argument_parser, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from ..checkpoint import SSDCheckpointer
from ..engine import SSDTrainer, setup
from . import args as arguments
from ..export import attach_backend


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = SSDTrainer.build_model(cfg)
        # reads Detectron2 checkpoints and, converting them, MLPerf / torchvision files
        SSDCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume)
        # MODEL.SSD.INFERENCE_BACKEND / INFERENCE_DTYPE (e.g. int8 with a calibration folder)
        attach_backend(model, cfg)
        res = SSDTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = SSDTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def resolve_config_file(path: str) -> str:
    """``path`` if it exists, else the model-zoo config of that name."""
    if not path or os.path.exists(path):
        return path
    from ..model_zoo import get_config_file

    return get_config_file(path)


def get_parser():
    """Detectron2's ``default_argument_parser`` with ``--dataset-coco`` / ``--dataset-voc``;
    overrides (bare KEY VALUE, or after --opts) may follow any option."""
    d2 = default_argument_parser()
    p = arguments.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog=__doc__.split("\n", 2)[2] + "\n" + (d2.epilog or ""),
                                 parents=[d2], add_help=False)
    return arguments.add_common_arguments(p)


def cli(argv=None):
    """Console script ``ssd-r34-train``."""
    args = get_parser().parse_args(argv)
    args.config_file = resolve_config_file(args.config_file)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
