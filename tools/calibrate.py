#!/usr/bin/env python
r"""Calibrate the INT8 network once: post-training static quantisation, saved in a folder.

    tools/calibrate.py --config-file configs/ssd_r34_shapes.yaml --output output/demo/int8 \
        MODEL.WEIGHTS output/demo/model_final.pth MODEL.SSD.INFERENCE_BACKEND openvino

Reads the first MODEL.SSD.INT8.CALIBRATION_IMAGES images of MODEL.SSD.INT8.CALIBRATION_DATASET
(default DATASETS.TRAIN[0]) with the test pre-processing, quantises the network of
MODEL.SSD.INFERENCE_BACKEND (onnxruntime: QDQ with MODEL.SSD.INT8.METHOD and PER_CHANNEL;
openvino: NNCF) and writes into --output the quantised network and calibration.json (backend,
digest of the weights, images, every scale). Then use it with
``MODEL.SSD.INFERENCE_DTYPE int8 MODEL.SSD.INT8.CALIBRATION_DIR <output>`` in
tools/train_net.py --eval-only, tools/demo.py or SSDPredictor. With --check N, also runs
float32 PyTorch and the INT8 engine on N images of DATASETS.TEST[0] and prints the share of
float32 detections the INT8 network reproduces (same class, IoU >= 0.9).
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

logger = logging.getLogger("ssd_r34.calibrate")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="folder for the quantised network and calibration.json")
    p.add_argument("--check", type=int, default=0, metavar="N",
                   help="compare INT8 with float32 on N images of DATASETS.TEST[0]")
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                   help="config overrides, e.g. MODEL.WEIGHTS model.pth")
    return p


def main(args):
    from detectron2.utils.logger import setup_logger

    from ssd_r34.checkpoint import SSDCheckpointer
    from ssd_r34.engine import setup_inference_cfg
    from detectron2.modeling import build_model

    from ssd_r34.inference import (attach_backend, calibrate, calibration_images,
                                   reproduced_detections)

    setup_logger(name="ssd_r34")
    cfg = setup_inference_cfg(args.config_file, args.opts)
    backend = cfg.MODEL.SSD.INFERENCE_BACKEND
    if backend == "pytorch":
        raise SystemExit("Set MODEL.SSD.INFERENCE_BACKEND onnxruntime or openvino: INT8 runs in "
                         "one of these engines.")
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        SSDCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    else:
        logger.warning("MODEL.WEIGHTS is empty: calibrating a randomly initialised model.")
    images, names = calibration_images(cfg)
    meta = calibrate(model, images, args.output, backend,
                     per_channel=cfg.MODEL.SSD.INT8.PER_CHANNEL, method=cfg.MODEL.SSD.INT8.METHOD,
                     image_names=names, float_layers=cfg.MODEL.SSD.INT8.FLOAT_LAYERS)
    print(f"Calibrated {backend} INT8 on {meta['num_images']} images: "
          f"{len(meta['scales'])} quantisation scales; written to {args.output}")
    print(f"Use: MODEL.SSD.INFERENCE_BACKEND {backend} MODEL.SSD.INFERENCE_DTYPE int8 "
          f"MODEL.SSD.INT8.CALIBRATION_DIR {args.output}")
    if args.check:
        import torch
        from detectron2.data import DatasetCatalog

        from ssd_r34.data import SSDDatasetMapper, ensure_dataset

        name = cfg.DATASETS.TEST[0]
        ensure_dataset(name)
        mapper = SSDDatasetMapper(cfg, is_train=False)
        inputs = [mapper(dict(d)) for d in DatasetCatalog.get(name)[: args.check]]
        int8_cfg = cfg.clone()
        int8_cfg.defrost()
        int8_cfg.MODEL.SSD.INFERENCE_DTYPE = "int8"
        int8_cfg.MODEL.SSD.INT8.CALIBRATION_DIR = args.output
        with torch.no_grad():
            ref = [o["instances"] for o in model(inputs)]
            attach_backend(model, int8_cfg)
            out = [o["instances"] for o in model(inputs)]
        m, t = reproduced_detections(out, ref)
        print(f"INT8 reproduces {m}/{t} float32 detections ({100.0 * m / max(t, 1):.1f}%, same "
              f"class, IoU >= 0.9) on {len(inputs)} images of {name}")


if __name__ == "__main__":
    main(get_parser().parse_args())
