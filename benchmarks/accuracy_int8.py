"""COCO AP of a trained model by precision and engine, same run: float32, bfloat16, INT8.

    python benchmarks/accuracy_int8.py --config-file configs/ssd_r34_shapes.yaml \
        --weights output/demo/model_final.pth [--calib-images 32]

INT8 calibrated on the first images of DATASETS.TRAIN[0], AP on DATASETS.TEST[0] (docs/int8.md).
"""
import argparse
import logging
import os
import tempfile

import torch

from _common import md_table
from detectron2.evaluation import inference_on_dataset
from detectron2.modeling import build_model

from ssd_r34.checkpoint import SSDCheckpointer
from ssd_r34.engine import SSDTrainer, setup_inference_cfg
from ssd_r34.export import (attach_backend, calibrate, calibration_images,
                               reproduced_detections)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", default="configs/ssd_r34_shapes.yaml")
    p.add_argument("--weights", required=True)
    p.add_argument("--calib-images", type=int, default=32)
    p.add_argument("--method", default="minmax", help="onnxruntime calibration method")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weights (onnxruntime)")
    p.add_argument("--only", default="", help="comma-separated subset of the rows' keys")
    p.add_argument("--float-layers", default="",
                   help="comma-separated SSD module names kept float32 in INT8 (e.g. head)")
    args = p.parse_args(argv)
    logging.getLogger("detectron2").setLevel(logging.WARNING)
    cfg = setup_inference_cfg(args.config_file, ["MODEL.WEIGHTS", args.weights])
    dataset = cfg.DATASETS.TEST[0]
    tmp = tempfile.TemporaryDirectory(prefix="accuracy_int8_")
    model = build_model(cfg).eval()
    SSDCheckpointer(model).load(args.weights)
    images, names = calibration_images(cfg, num_images=args.calib_images)
    float_layers = tuple(x for x in args.float_layers.split(",") if x)
    folders = {b: os.path.join(tmp.name, b) for b in ("onnxruntime", "openvino")}
    for backend, folder in folders.items():
        calibrate(model, images, folder, backend, per_channel=not args.per_tensor,
                  method=args.method if backend == "onnxruntime" else "minmax",
                  image_names=names, float_layers=float_layers)
    ort, ov = (["MODEL.SSD.INFERENCE_BACKEND", b] for b in ("onnxruntime", "openvino"))
    int8 = ["MODEL.SSD.INFERENCE_DTYPE", "int8", "MODEL.SSD.INT8.CALIBRATION_DIR"]
    rows = {  # key -> (label, overrides)
        "fp32": ("PyTorch float32 (defaults)", []),
        "bf16": ("PyTorch bfloat16 (INFERENCE_DTYPE bfloat16)",
                 ["MODEL.SSD.INFERENCE_DTYPE", "bfloat16"]),
        "ort_fp32": ("ONNX Runtime float32", ort),
        "ov_fp32": ("OpenVINO float32", ov),
        "ort_int8": (f"ONNX Runtime INT8 (QDQ, {'per-tensor' if args.per_tensor else 'per-channel'}"
                     f", {args.method})", ort + int8 + [folders["onnxruntime"]]),
        "ov_int8": ("OpenVINO INT8 (NNCF, per-channel, min-max)",
                    ov + int8 + [folders["openvino"]]),
    }
    if args.only:
        rows = {k: v for k, v in rows.items() if k == "fp32" or k in args.only.split(",")}
    loader = SSDTrainer.build_test_loader(cfg, dataset)
    results = {}
    for key, (label, opts) in rows.items():
        c = cfg.clone()
        c.defrost()
        c.merge_from_list(opts)
        m = build_model(c).eval()
        m.load_state_dict(model.state_dict())
        attach_backend(m, c)
        outputs = []  # kept to compare the detections with float32's
        m.register_forward_hook(lambda _m, _i, out: outputs.extend(o["instances"].to("cpu")
                                                                   for o in out))
        evaluator = SSDTrainer.build_evaluator(c, dataset, os.path.join(tmp.name, key))
        with torch.no_grad():
            bbox = inference_on_dataset(m, loader, evaluator)["bbox"]
        results[key] = (label, bbox["AP"], bbox["AP50"], outputs)
    fp32_ap, fp32_out = results["fp32"][1], results["fp32"][3]
    print(f"\n### COCO AP on {dataset} ({len(fp32_out)} images), {args.weights}\n")
    print(f"Calibration: first {args.calib_images} images of {cfg.DATASETS.TRAIN[0]}; "
          f"float32 layers: {', '.join(float_layers) or 'none'}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads.\n")
    rows = []
    for key, (label, ap, ap50, out) in results.items():
        m, t = reproduced_detections(out, fp32_out)
        share = f"{100 * ap / fp32_ap:.1f}%" if fp32_ap else "-"  # (untrained: AP 0)
        rows.append([label, f"{ap:.2f}", f"{ap50:.2f}", share,
                     f"{100.0 * m / max(t, 1):.1f}% ({m}/{t})"])
    print(md_table(["precision / engine", "AP", "AP50", "AP / float32 AP",
                    "float32 detections reproduced (same class, IoU >= 0.9)"], rows, "lrrrr"))
    tmp.cleanup()
    return results


if __name__ == "__main__":
    main()
