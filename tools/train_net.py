#!/usr/bin/env python
r"""Train or evaluate SSD-ResNet34 with Detectron2's usual command line.

    tools/train_net.py --config-file configs/ssd_r34_1200.yaml --num-gpus 8
    tools/train_net.py --config-file configs/ssd_r34_1200.yaml --eval-only MODEL.WEIGHTS model.pth
    tools/train_net.py --config-file configs/ssd_r34_shapes.yaml MODEL.DEVICE cpu

    # your own COCO-format data set (docs/data.md, "Train on your own data")
    tools/train_net.py --config-file configs/ssd_r34_shapes.yaml --num-gpus 2 \
        --dataset-coco mine_train train.json images/ --dataset-coco mine_val val.json images/ \
        DATASETS.TRAIN "('mine_train',)" DATASETS.TEST "('mine_val',)" MODEL.SSD.NUM_CLASSES 2
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detectron2.engine import default_argument_parser, launch  # noqa: E402
from detectron2.evaluation import verify_results  # noqa: E402
from detectron2.utils import comm  # noqa: E402

from ssd_r34.checkpoint import SSDCheckpointer  # noqa: E402
from ssd_r34.engine import SSDTrainer, cli, setup  # noqa: E402


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = SSDTrainer.build_model(cfg)
        # reads Detectron2 checkpoints and, converting them, MLPerf / torchvision files
        SSDCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume)
        res = SSDTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = SSDTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def get_parser():
    """Detectron2's ``default_argument_parser`` with ``--dataset-coco`` / ``--dataset-voc``;
    overrides (bare KEY VALUE, or after --opts) may follow any option."""
    d2 = default_argument_parser()
    p = cli.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2]
                           + "\n" + (d2.epilog or ""), parents=[d2], add_help=False)
    return cli.add_common_arguments(p)


if __name__ == "__main__":
    args = get_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
