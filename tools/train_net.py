#!/usr/bin/env python
"""Train or evaluate SSD-ResNet34 with Detectron2's usual command line.

    tools/train_net.py --config-file configs/ssd_r34_1200.yaml --num-gpus 8
    tools/train_net.py --config-file configs/ssd_r34_1200.yaml --eval-only MODEL.WEIGHTS model.pth
    tools/train_net.py --config-file configs/ssd_r34_shapes.yaml MODEL.DEVICE cpu
    tools/train_net.py --config-file configs/ssd_r34_shapes.yaml --eval-only \
        MODEL.WEIGHTS model.pth MODEL.SSD.INFERENCE_BACKEND openvino \
        MODEL.SSD.INFERENCE_DTYPE int8 MODEL.SSD.INT8.CALIBRATION_DIR calib/  # tools/calibrate.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detectron2.engine import default_argument_parser, launch  # noqa: E402
from detectron2.evaluation import verify_results  # noqa: E402
from detectron2.utils import comm  # noqa: E402

from ssd_r34.checkpoint import SSDCheckpointer  # noqa: E402
from ssd_r34.engine import SSDTrainer, setup  # noqa: E402
from ssd_r34.inference import attach_backend  # noqa: E402


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


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
