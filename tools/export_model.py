#!/usr/bin/env python
r"""Export SSD-ResNet34 with its postprocessing to TorchScript or ONNX and check it.

    tools/export_model.py --config-file configs/ssd_r34_shapes.yaml --format onnx \
        --output out/export MODEL.WEIGHTS output/demo/model_final.pth

The exported model takes one image at the config's INPUT.FIXED_SIZE, (1, 3, H, W), raw
uint8 pixels in INPUT.FORMAT channel order (default; --input-type normalized for float32
already normalised with PIXEL_MEAN / PIXEL_STD), and returns ``boxes`` (M, 4) XYXY in input
pixels (unclipped), ``scores`` (M,) and ``classes`` (M,) int64 (contiguous ids), M <=
TEST.DETECTIONS_PER_IMAGE: softmax, per-class top-k, score threshold and NMS are in
the graph. Resize your image to H x W first, and scale the boxes by (W0 / W, H0 / H) back.

Writes ``model.ts`` (TorchScript, ``torch.jit.load``) or ``model.onnx`` (onnxruntime) into
--output with ``classes.json``: per output class (contiguous id) its ``name`` and the data
set's own ``category_id``, from the metadata of DATASETS.TEST[0] (``--dataset-coco`` names
your own; its json's categories are read). Then runs PyTorch and the export on sample
images (--sample-image, repeatable; default the first --num-samples images of
DATASETS.TEST[0]) and prints a table: detections of each, whether the classes agree, the
largest box (pixels) and score differences, and the time per image. Exit status 1 when they differ beyond --box-tol / --score-tol.
"""
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

logger = logging.getLogger("ssd_r34.export")
FILE_NAMES = {"torchscript": "model.ts", "onnx": "model.onnx"}


def get_parser():
    from ssd_r34.cli import args as cli

    p = cli.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2])
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
    p.add_argument("--mlperf-io", action="store_true",
                   help="ONNX in MLPerf inference's convention: input 'image' (N, 3, H, W) "
                   "float32 normalised as MLPerf's pre-processing leaves it; outputs 'bboxes' "
                   "(N, M, 4) in [0, 1], 'labels' (N, M) 1-based, 'scores' (N, M); the sample "
                   "images go through INPUT.RESIZE_IMPL cv2-float")
    p.add_argument("--batch-size", type=int, default=1,
                   help="--mlperf-io: N, fixed in the graph (default 1: M dynamic)")
    p.add_argument("--box-tol", type=float, default=1e-2,
                   help="largest box difference in pixels that passes (default 0.01)")
    p.add_argument("--score-tol", type=float, default=1e-4,
                   help="largest score difference that passes (default 1e-4)")
    return cli.add_common_arguments(p)


def timed(fn, x):
    t = time.perf_counter()
    out = fn(x)
    return out, time.perf_counter() - t


def class_table(cfg, metadata):
    """[{"id": contiguous id, "category_id": the data set's id, "name": ...}] for the
    model's MODEL.SSD.NUM_CLASSES outputs; ids and names of a class the data set lacks are
    the contiguous id (as the demo writes them)."""
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

    from ssd_r34.data import ensure_dataset

    if not cfg.DATASETS.TEST:
        raise SystemExit("Give --sample-image: the config has no DATASETS.TEST.")
    name = cfg.DATASETS.TEST[0]
    ensure_dataset(name)
    return [d["file_name"] for d in DatasetCatalog.get(name)[: args.num_samples]]


def main(args):
    from detectron2.data.detection_utils import read_image
    from tabulate import tabulate

    from ssd_r34.export import (SSDExportModule, compare_detections, export_onnx,
                                export_torchscript, load_exported)
    from ssd_r34.cli import args as cli
    from ssd_r34.engine import SSDPredictor

    cli.setup_tool_logger()
    if args.mlperf_io:
        if args.format != "onnx":
            raise SystemExit("--mlperf-io exports ONNX: give --format onnx.")
        return main_mlperf_io(args)
    cfg = cli.inference_cfg(args, device="cpu")
    predictor = SSDPredictor(cfg, image_format="RGB")
    module = SSDExportModule(predictor.model, input_format=args.input_type).eval()

    inputs = []
    for path in sample_paths(cfg, args):
        image = read_image(path, format="RGB")
        x = predictor.preprocess(image)["image"][None]  # uint8, INPUT.FORMAT, H x W
        inputs.append((path, module.example_input(x)))
    if not inputs:
        raise SystemExit("No sample image.")

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
    with torch.no_grad():  # warm-up: the times below are of one call each
        module(inputs[0][1])
    runner(inputs[0][1])
    rows, results = [], []
    for name, x in inputs:
        with torch.no_grad():
            ref, t_ref = timed(module, x)
        out, t_out = timed(runner, x)
        r = compare_detections(ref, out, max_detections=cfg.TEST.DETECTIONS_PER_IMAGE,
                               score_tol=args.score_tol)
        r.update(image=name, seconds_pytorch=t_ref, seconds_export=t_out)
        r["ok"] = (r["same_classes"] and r["max_box_diff"] <= args.box_tol
                   and r["max_score_diff"] <= args.score_tol)
        results.append(r)
        rows.append([os.path.basename(name), r["detections_ref"], r["detections_export"],
                     "yes" if r["same_classes"] else "NO", f"{r['max_box_diff']:.2e}",
                     f"{r['max_score_diff']:.2e}", f"{1000 * t_ref:.0f}", f"{1000 * t_out:.0f}",
                     "ok" if r["ok"] else "DIFFERENT"])
    print(tabulate(rows, headers=["image", "dets PyTorch", f"dets {args.format}", "same classes",
                                  "max box diff (px)", "max score diff", "PyTorch ms",
                                  f"{args.format} ms", "check"]))
    ok = all(r["ok"] for r in results)
    print(f"{args.format} export {'matches' if ok else 'DOES NOT match'} PyTorch on "
          f"{len(results)} image(s) (tolerances: {args.box_tol} px, score {args.score_tol}).")
    return {"path": path, "classes": classes_path, "results": results, "ok": ok}


def main_mlperf_io(args):
    """--mlperf-io: export SSDMLPerfExportModule, check onnxruntime against eager PyTorch on
    the sample images (MLPerf's pre-processing), boxes compared in input pixels."""
    import onnxruntime as ort
    from tabulate import tabulate

    from ssd_r34.data import read_image_cv2
    from ssd_r34.data.transforms import cv2_float_preprocess_from_cfg
    from ssd_r34.engine import SSDPredictor, setup_inference_cfg
    from ssd_r34.export import SSDMLPerfExportModule, compare_detections, export_mlperf_onnx

    cfg = setup_inference_cfg(args.config_file, list(args.opts) + ["INPUT.RESIZE_IMPL", "cv2-float"],
                              device="cpu")
    module = SSDMLPerfExportModule(SSDPredictor(cfg).model, batch_size=args.batch_size).eval()
    paths = sample_paths(cfg, args)
    if not paths:
        raise SystemExit("No sample image.")
    images = [torch.from_numpy(cv2_float_preprocess_from_cfg(cfg, read_image_cv2(p)))
              for p in paths]
    path = os.path.join(args.output, "model_mlperf.onnx")
    export_mlperf_onnx(module, module.example_input(), path, opset=args.opset)
    H, W = cfg.INPUT.FIXED_SIZE
    print(f"Exported onnx (MLPerf I/O) to {path} ({os.path.getsize(path) / 2**20:.1f} MiB): "
          f"input image ({args.batch_size}, 3, {H}, {W}) float32 normalised, outputs bboxes, "
          "labels, scores")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    scale = torch.tensor([W, H, W, H], dtype=torch.float64)
    rows, results = [], []
    for i in range(0, len(images), args.batch_size):
        chunk = images[i:i + args.batch_size]
        n = len(chunk)
        x = torch.stack(chunk + [torch.zeros_like(chunk[0])] * (args.batch_size - n))
        with torch.no_grad():
            ref = module(x)
        out = [torch.from_numpy(o) for o in session.run(["bboxes", "labels", "scores"],
                                                        {"image": x.numpy()})]
        for j in range(n):
            per = []
            for b, l, s in (ref, out):
                keep = s[j] > 0
                per.append((b[j][keep].double() * scale, s[j][keep], l[j][keep]))
            r = compare_detections(per[0], per[1], max_detections=cfg.TEST.DETECTIONS_PER_IMAGE,
                                   score_tol=args.score_tol)
            r["ok"] = (r["same_classes"] and r["max_box_diff"] <= args.box_tol
                       and r["max_score_diff"] <= args.score_tol)
            r["image"] = paths[i + j]
            results.append(r)
            rows.append([os.path.basename(paths[i + j]), r["detections_ref"],
                         r["detections_export"], "yes" if r["same_classes"] else "NO",
                         f"{r['max_box_diff']:.2e}", f"{r['max_score_diff']:.2e}",
                         "ok" if r["ok"] else "DIFFERENT"])
    print(tabulate(rows, headers=["image", "dets PyTorch", "dets onnx", "same classes",
                                  "max box diff (px)", "max score diff", "check"]))
    ok = all(r["ok"] for r in results)
    print(f"onnx (MLPerf I/O) export {'matches' if ok else 'DOES NOT match'} PyTorch on "
          f"{len(results)} image(s) (tolerances: {args.box_tol} px, score {args.score_tol}).")
    return {"path": path, "results": results, "ok": ok}


if __name__ == "__main__":
    sys.exit(0 if main(get_parser().parse_args())["ok"] else 1)
