"""Export SSD-ResNet34 with its postprocessing to TorchScript or ONNX, and check the export
against PyTorch on sample images (exit status 1 beyond --box-tol / --score-tol). Usage and
what is written: docs/export.md."""
import argparse
import json
import logging
import os
import time

import torch

from ..engine import SSDPredictor
from ..export import (SSDExportModule, SSDMLPerfExportModule, compare_detections,
                      export_mlperf_onnx, export_onnx, export_torchscript, load_exported)
from . import args as cli

logger = logging.getLogger(__name__)
FILE_NAMES = {"torchscript": "model.ts", "onnx": "model.onnx"}


def get_parser():
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="docs/export.md")
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--format", required=True, choices=sorted(FILE_NAMES))
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--input-type", choices=["uint8", "normalized"], default="uint8",
                   help="what the exported model takes (default uint8: raw pixels)")
    p.add_argument("--sample-image", action="append", default=[], metavar="PATH",
                   help="an image to check the export on (repeat for more)")
    p.add_argument("--num-samples", type=int, default=3,
                   help="without --sample-image: how many images of DATASETS.TEST[0]")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--mlperf-io", action="store_true", help="ONNX in MLPerf inference's I/O "
                   "convention (docs/export.md); samples through INPUT.RESIZE_IMPL cv2-float")
    p.add_argument("--batch-size", type=int, default=1,
                   help="--mlperf-io: N, fixed in the graph (default 1: M dynamic)")
    p.add_argument("--box-tol", type=float, default=1e-2,
                   help="largest box difference in pixels that passes (default 0.01)")
    p.add_argument("--score-tol", type=float, default=1e-4,
                   help="largest score difference that passes (default 1e-4)")
    return cli.add_common_arguments(p)


def class_table(cfg, metadata):
    """[{"id": contiguous id, "category_id": the data set's id (else id), "name": ...}] per
    output class (MODEL.SSD.NUM_CLASSES)."""
    names = list(metadata.get("thing_classes", None) or []) if metadata else []
    m = metadata.get("thing_dataset_id_to_contiguous_id", None) if metadata else None
    to_dataset = {v: k for k, v in (m or {}).items()}
    if names and len(names) != cfg.MODEL.SSD.NUM_CLASSES:
        logger.warning("%s has %d classes but MODEL.SSD.NUM_CLASSES is %d.", cfg.DATASETS.TEST[0],
                       len(names), cfg.MODEL.SSD.NUM_CLASSES)
    return [{"id": i, "category_id": int(to_dataset.get(i, i)),
             "name": names[i] if i < len(names) else str(i)}
            for i in range(cfg.MODEL.SSD.NUM_CLASSES)]


def sample_paths(cfg, args):
    if args.sample_image:
        return list(args.sample_image)
    from detectron2.data import DatasetCatalog

    from ..data import ensure_dataset

    if not cfg.DATASETS.TEST:
        raise SystemExit("Give --sample-image: the config has no DATASETS.TEST.")
    ensure_dataset(cfg.DATASETS.TEST[0])
    paths = [d["file_name"] for d in DatasetCatalog.get(cfg.DATASETS.TEST[0])[: args.num_samples]]
    if not paths:
        raise SystemExit("No sample image.")
    return paths


def timed(fn, x):
    t = time.perf_counter()
    with torch.no_grad():
        out = fn(x)
    return out, time.perf_counter() - t


def check(checks, args, name, max_detections):
    """Per image (path, PyTorch's and the export's (boxes (M, 4) in input pixels, scores,
    classes), their seconds): compare_detections + ``ok``, printed as a table; (results,
    all ok)."""
    from tabulate import tabulate

    rows, results = [], []
    for path, ref, out, t_ref, t_out in checks:
        r = compare_detections(ref, out, max_detections=max_detections, score_tol=args.score_tol)
        r.update(image=path, seconds_pytorch=t_ref, seconds_export=t_out)
        r["ok"] = (r["same_classes"] and r["max_box_diff"] <= args.box_tol
                   and r["max_score_diff"] <= args.score_tol)
        results.append(r)
        rows.append([os.path.basename(path), r["detections_ref"], r["detections_export"],
                     "yes" if r["same_classes"] else "NO", f"{r['max_box_diff']:.2e}",
                     f"{r['max_score_diff']:.2e}", f"{1000 * t_ref:.0f}", f"{1000 * t_out:.0f}",
                     "ok" if r["ok"] else "DIFFERENT"])
    print(tabulate(rows, headers=["image", "dets PyTorch", f"dets {args.format}", "same classes",
                                  "max box diff (px)", "max score diff", "PyTorch ms",
                                  f"{args.format} ms", "check"]))
    ok = all(r["ok"] for r in results)
    print(f"{name} export {'matches' if ok else 'DOES NOT match'} PyTorch on {len(results)} "
          f"image(s) (tolerances: {args.box_tol} px, score {args.score_tol}).")
    return results, ok


def main(argv=None):
    args = argv if isinstance(argv, argparse.Namespace) else get_parser().parse_args(argv)
    cli.setup_tool_logger()
    if args.mlperf_io:
        if args.format != "onnx":
            raise SystemExit("--mlperf-io exports ONNX: give --format onnx.")
        return main_mlperf_io(args)
    from detectron2.data.detection_utils import read_image

    cfg = cli.inference_cfg(args, device="cpu")
    predictor = SSDPredictor(cfg, image_format="RGB")
    module = SSDExportModule(predictor.model, input_format=args.input_type).eval()
    inputs = [(p, module.example_input(predictor.preprocess(read_image(p, format="RGB"))
                                       ["image"][None]))  # uint8, INPUT.FORMAT, H x W
              for p in sample_paths(cfg, args)]
    path = os.path.join(args.output, FILE_NAMES[args.format])
    if args.format == "torchscript":
        export_torchscript(module, inputs[0][1], path)
    else:
        export_onnx(module, inputs[0][1], path, opset=args.opset)
    print(f"Exported {args.format} to {path} ({os.path.getsize(path) / 2**20:.1f} MiB): input "
          f"(1, 3, {cfg.INPUT.FIXED_SIZE[0]}, {cfg.INPUT.FIXED_SIZE[1]}) {args.input_type}, "
          "outputs boxes, scores, classes")
    classes = class_table(cfg, predictor.metadata)
    classes_path = os.path.join(args.output, "classes.json")
    with open(classes_path, "w") as f:
        json.dump({"classes": classes}, f, indent=1)
    print(f"Classes ({classes_path}): " + ", ".join(
        f"{c['id']} = {c['name']} (category_id {c['category_id']})" for c in classes[:10])
        + (f", ... ({len(classes)} in all)" if len(classes) > 10 else ""))
    runner = load_exported(args.format, path)
    timed(module, inputs[0][1]), timed(runner, inputs[0][1])  # warm-up: one call each below
    checks = []
    for p, x in inputs:
        (ref, t_ref), (out, t_out) = timed(module, x), timed(runner, x)
        checks.append((p, ref, out, t_ref, t_out))
    results, ok = check(checks, args, args.format, predictor.model.max_detections_per_image)
    return {"path": path, "classes": classes_path, "results": results, "ok": ok}


def main_mlperf_io(args):
    """--mlperf-io: export SSDMLPerfExportModule and check it on onnxruntime against eager
    PyTorch on the sample images (MLPerf's pre-processing), boxes compared in input pixels."""
    from ..data import read_image_cv2
    from ..data.transforms import cv2_float_preprocess_from_cfg

    cfg = cli.inference_cfg(argparse.Namespace(**{**vars(args), "opts": list(args.opts) + [
        "INPUT.RESIZE_IMPL", "cv2-float"]}), device="cpu")
    module = SSDMLPerfExportModule(SSDPredictor(cfg).model, batch_size=args.batch_size).eval()
    paths = sample_paths(cfg, args)
    images = [torch.from_numpy(cv2_float_preprocess_from_cfg(cfg, read_image_cv2(p)))
              for p in paths]
    path = export_mlperf_onnx(module, module.example_input(),
                              os.path.join(args.output, "model_mlperf.onnx"), opset=args.opset)
    H, W = cfg.INPUT.FIXED_SIZE
    print(f"Exported onnx (MLPerf I/O) to {path} ({os.path.getsize(path) / 2**20:.1f} MiB): "
          f"input image ({args.batch_size}, 3, {H}, {W}) float32 normalised, outputs bboxes, "
          "labels, scores")
    runner = load_exported("onnx", path)
    scale = torch.tensor([W, H, W, H], dtype=torch.float64)
    checks = []
    for i in range(0, len(images), args.batch_size):
        chunk = images[i:i + args.batch_size]
        n = len(chunk)
        x = torch.stack(chunk + [torch.zeros_like(chunk[0])] * (args.batch_size - n))
        (ref, t_ref), (out, t_out) = timed(module, x), timed(runner, x)
        for j in range(n):
            ref_j, out_j = ((b[j][s[j] > 0].double() * scale, s[j][s[j] > 0], c[j][s[j] > 0])
                            for b, c, s in (ref, out))  # without a batched export's padding
            checks.append((paths[i + j], ref_j, out_j, t_ref / n, t_out / n))
    results, ok = check(checks, args, "onnx (MLPerf I/O)", module.model.max_detections_per_image)
    return {"path": path, "results": results, "ok": ok}
