"""Export SSD-ResNet34 with its postprocessing to TorchScript or ONNX, and check the export
against PyTorch on sample images (exit status 1 beyond --box-tol / --score-tol). Usage and
what is written: docs/export.md."""
import json
import os
import time

import torch
from tabulate import tabulate

from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image

from ..data import read_image_cv2
from ..data.transforms import cv2_float_preprocess_from_cfg
from ..engine import SSDPredictor
from ..export import (SSDExportModule, SSDMLPerfExportModule, compare_detections,
                      export_onnx, export_torchscript, load_exported)
from . import args as cli

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


def sample_paths(cfg, args):
    if args.sample_image:
        return list(args.sample_image)
    if not cfg.DATASETS.TEST:
        raise SystemExit("Give --sample-image: the config has no DATASETS.TEST.")
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
    """Returns: {"path": the exported file, "classes": classes.json (not with --mlperf-io),
    "results": per sample image, :func:`check`'s, "ok": all within the tolerances}."""
    args = get_parser().parse_args(argv)
    cli.setup_tool_logger()
    if args.mlperf_io and args.format != "onnx":
        raise SystemExit("--mlperf-io exports ONNX: give --format onnx.")
    if args.mlperf_io:  # MLPerf's pre-processing of the samples
        args.opts = list(args.opts) + ["INPUT.RESIZE_IMPL", "cv2-float"]
    cfg = cli.inference_cfg(args, device="cpu")
    predictor = SSDPredictor(cfg, image_format="RGB")
    paths, (H, W), res = sample_paths(cfg, args), cfg.INPUT.FIXED_SIZE, {}
    if args.mlperf_io:
        n, name = args.batch_size, "onnx (MLPerf I/O)"
        module = SSDMLPerfExportModule(predictor.model, batch_size=n).eval()
        images = [torch.from_numpy(cv2_float_preprocess_from_cfg(cfg, read_image_cv2(p)))
                  for p in paths]  # batches of n, the last one padded with zeros
        images += [torch.zeros_like(images[0])] * (-len(images) % n)
        batches = [(paths[i:i + n], torch.stack(images[i:i + n])) for i in range(0, len(paths), n)]
        res["path"] = export_onnx(module, module.example_input(), os.path.join(
            args.output, "model_mlperf.onnx"), opset=args.opset)
        shapes = f"input image ({n}, 3, {H}, {W}) float32 normalised, outputs bboxes, labels, " \
            "scores"
        scale = torch.tensor([W, H, W, H], dtype=torch.float64)

        def per_image(o, j):  # image j's detections, without a batched export's padding
            (b, c, s), keep = o, o[2][j] > 0
            return b[j][keep].double() * scale, s[j][keep], c[j][keep]
    else:
        name = args.format
        module = SSDExportModule(predictor.model, input_format=args.input_type).eval()
        batches = [([p], module.example_input(predictor.preprocess(read_image(
            p, format="RGB"))["image"][None])) for p in paths]  # uint8, INPUT.FORMAT, H x W
        res["path"] = os.path.join(args.output, FILE_NAMES[args.format])
        if args.format == "torchscript":
            export_torchscript(module, batches[0][1], res["path"])
        else:
            export_onnx(module, batches[0][1], res["path"], opset=args.opset)
        shapes = f"input (1, 3, {H}, {W}) {args.input_type}, outputs boxes, scores, classes"

        def per_image(o, j):
            return o
    print(f"Exported {name} to {res['path']} ({os.path.getsize(res['path']) / 2**20:.1f} MiB): "
          + shapes)
    if not args.mlperf_io:
        classes = cli.class_table(cfg, predictor.metadata)
        res["classes"] = os.path.join(args.output, "classes.json")
        with open(res["classes"], "w") as f:
            json.dump({"classes": classes}, f, indent=1)
        print(f"Classes ({res['classes']}): " + ", ".join(
            f"{c['id']} = {c['name']} (category_id {c['category_id']})" for c in classes[:10])
            + (f", ... ({len(classes)} in all)" if len(classes) > 10 else ""))
    runner = load_exported(args.format, res["path"])
    timed(module, batches[0][1]), timed(runner, batches[0][1])  # warm-up: one call each below
    checks = []
    for batch, x in batches:
        (ref, t_ref), (out, t_out) = timed(module, x), timed(runner, x)
        checks += [(p, per_image(ref, j), per_image(out, j), t_ref / len(batch),
                    t_out / len(batch)) for j, p in enumerate(batch)]
    res["results"], res["ok"] = check(checks, args, name, predictor.model.max_detections_per_image)
    return res
