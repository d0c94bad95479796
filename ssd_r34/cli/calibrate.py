"""Calibrate the INT8 network once (post-training static quantisation of the network of
MODEL.SSD.INFERENCE_BACKEND), saved in --output; --check N compares it with float32 on N
images of DATASETS.TEST[0]. Usage: docs/int8.md."""
import logging

import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from ..checkpoint import SSDCheckpointer
from ..data import SSDDatasetMapper
from ..export import attach_backend, calibrate, calibration_images, reproduced_detections
from . import args as cli

logger = logging.getLogger(__name__)


def get_parser():
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="docs/int8.md")
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="folder for the quantised network and calibration.json")
    p.add_argument("--check", type=int, default=0, metavar="N",
                   help="compare INT8 with float32 on N images of DATASETS.TEST[0]")
    return cli.add_common_arguments(p)


def main(argv=None):
    args = get_parser().parse_args(argv)
    cli.setup_tool_logger()
    cfg = cli.inference_cfg(args)
    backend, int8 = cfg.MODEL.SSD.INFERENCE_BACKEND, cfg.MODEL.SSD.INT8
    if backend == "pytorch":
        raise SystemExit("Set MODEL.SSD.INFERENCE_BACKEND onnxruntime or openvino: INT8 runs in "
                         "one of these engines.")
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        SSDCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    else:
        logger.warning("MODEL.WEIGHTS is empty: calibrating a randomly initialised model.")
    images, names = calibration_images(cfg)
    meta = calibrate(model, images, args.output, backend, per_channel=int8.PER_CHANNEL,
                     method=int8.METHOD, image_names=names, float_layers=int8.FLOAT_LAYERS)
    print(f"Calibrated {backend} INT8 on {meta['num_images']} images: "
          f"{len(meta['scales'])} quantisation scales; written to {args.output}")
    print(f"Use: MODEL.SSD.INFERENCE_BACKEND {backend} MODEL.SSD.INFERENCE_DTYPE int8 "
          f"MODEL.SSD.INT8.CALIBRATION_DIR {args.output}")
    if args.check:
        name = cfg.DATASETS.TEST[0]
        mapper = SSDDatasetMapper(cfg, is_train=False)
        inputs = [mapper(dict(d)) for d in DatasetCatalog.get(name)[: args.check]]
        int8_cfg = cfg.clone()
        int8_cfg.defrost()
        int8_cfg.merge_from_list(["MODEL.SSD.INFERENCE_DTYPE", "int8",
                                  "MODEL.SSD.INT8.CALIBRATION_DIR", args.output])
        with torch.no_grad():
            ref = [o["instances"] for o in model(inputs)]
            out = [o["instances"] for o in attach_backend(model, int8_cfg)(inputs)]
        m, t = reproduced_detections(out, ref)
        print(f"INT8 reproduces {m}/{t} float32 detections ({100.0 * m / max(t, 1):.1f}%, same "
              f"class, IoU >= 0.9) on {len(inputs)} images of {name}")
