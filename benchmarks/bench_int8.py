"""Inference by precision and engine, 1200x1200 (strides 3 3 2 2 2 2), batch 1 and 4, per image.

As bench_inference.py: the baseline, ssd_r34 in PyTorch float32 / bfloat16, with the
onnxruntime / openvino backends in float32 and INT8, and the whole exported graph; images/s
per core beside MLPerf's CPU result (docs/int8.md).
"""
import os
import statistics
import tempfile

import onnxruntime
import openvino
import torch

from _common import (bf16_rows, compare_loosely, cpu_flags, md_table, normalized, parse, parser,
                     random_images, report, time_interleaved)
from baseline import reference_inference, reference_model
from bench_inference import ORIGINAL, benchmark_model, detector, variant

from ssd_r34.export import SSDExportModule, detections_to_instances, export_onnx
from ssd_r34.export import EngineNetwork, calibrate

MLPERF_PER_CORE = 86.0 / 80  # images/s per core, MLPerf inference CPU result (INT8, Offline)
BASELINE = "baseline (reference, float32)"
FP32 = "ssd_r34 float32 (defaults, PyTorch)"
INT8 = {"onnxruntime": "ssd_r34 INT8, INFERENCE_BACKEND onnxruntime (QDQ, per-channel)",
        "openvino": "ssd_r34 INT8, INFERENCE_BACKEND openvino (NNCF)"}


def main(argv=None):
    p = parser(__doc__.splitlines()[0], repeats=3)
    p.add_argument("--batches", default="1,4")
    p.add_argument("--repeats-large", type=int, default=2, help="rounds at batch 4")
    p.add_argument("--calib-images", type=int, default=4,
                   help="calibration images for the INT8 rows (random images, random weights)")
    p.add_argument("--int8-backends", default="onnxruntime,openvino",
                   help="engines to calibrate and time in INT8 (comma-separated; '' for none)")
    p.add_argument("--skip", default="",
                   help="comma-separated words: rows whose name contains one are not run")
    p.add_argument("--bf16-batches", default="1",
                   help="batch sizes that get the PyTorch bfloat16 row (comma-separated) where "
                        "the CPU has no bf16 instructions (emulated: minutes); with them, or "
                        "with --bf16 on, every batch size gets it, and --bf16 off drops it")
    args = parse(p, argv)
    skip = [w for w in args.skip.split(",") if w]
    int8_backends = [b for b in args.int8_backends.split(",") if b]
    ours = benchmark_model()
    H, W = ours.input_size
    ref, dboxes = reference_model(ours, (3, 3, 2, 2, 2, 2), (H, W))
    ref.eval()
    tmp = tempfile.TemporaryDirectory(prefix="bench_int8_")
    calib = normalized(ours, random_images(args.calib_images, (H, W), seed=7)[0])
    labels = {FP32: ours, "ssd_r34 bfloat16 (INFERENCE_DTYPE bfloat16, PyTorch autocast)":
              variant(ours, "MODEL.SSD.INFERENCE_DTYPE", "bfloat16")}
    labels.update({f"ssd_r34 float32, INFERENCE_BACKEND {b}":
                   variant(ours, "MODEL.SSD.INFERENCE_BACKEND", b) for b in INT8})
    for backend in (b for b in INT8 if b in int8_backends):  # INT8 rows last
        folder = os.path.join(tmp.name, backend)
        calibrate(ours, calib, folder, backend)
        labels[INT8[backend]] = variant(ours, "MODEL.SSD.INFERENCE_BACKEND", backend,
                                        "MODEL.SSD.INFERENCE_DTYPE", "int8",
                                        "MODEL.SSD.INT8.CALIBRATION_DIR", folder)
    # What a user would run instead: the whole exported graph, one uint8 image per call.
    full = export_onnx(SSDExportModule(ours).eval(), torch.zeros(1, 3, H, W, dtype=torch.uint8),
                       os.path.join(tmp.name, "full.onnx"))
    full = {"ONNX Runtime": EngineNetwork("onnxruntime", full),
            "OpenVINO": EngineNetwork("openvino", full)}
    results = {}
    cores = torch.get_num_threads()  # the rows use this many threads
    for batch in [int(b) for b in args.batches.split(",")]:
        images, inputs = random_images(batch, (H, W), seed=batch, original=ORIGINAL)
        fns = {BASELINE: lambda: reference_inference(ref, images, dboxes, [ORIGINAL] * batch)}
        fns.update({name: detector(m, inputs) for name, m in labels.items()})
        for engine, net in full.items():
            fns[f"{engine} float32 (whole exported graph)"] = lambda net=net, images=images: [
                detections_to_instances(*net(i[None]), (H, W), *ORIGINAL) for i in images]
        bf16 = args.bf16 != "off" and (bf16_rows(args)
                                       or str(batch) in args.bf16_batches.split(","))
        row_skip = skip + ([] if bf16 else ["bfloat16"])
        fns = {k: v for k, v in fns.items()
               if k in (BASELINE, FP32) or not any(w in k for w in row_skip)}
        reference_out = fns[FP32]()
        notes = [f"CPU flags: {cpu_flags()}; torch {torch.__version__}; onnxruntime "
                 f"{onnxruntime.__version__}, openvino {openvino.__version__}."]
        notes += [f"{name} vs ssd_r34 float32: {compare_loosely(fn(), reference_out)}."
                  for name, fn in fns.items() if name not in (BASELINE, FP32)]
        times = time_interleaved(fns, args.repeats if batch == 1 else args.repeats_large)
        fastest = min((n for n in fns if n.startswith("ssd_r34")),
                      key=lambda n: statistics.median(times[n]))
        res = report(f"Inference by precision and engine: {H}x{W}, batch {batch} (per image)",
                     times, BASELINE, target=(fastest, 20.0), per=batch,
                     notes=notes, json_path=args.json, key=f"int8_batch{batch}")
        print("\n" + md_table(
            ["implementation", "images/s", f"images/s per core ({cores} threads)",
             "MLPerf CPU INT8 result per core"],
            [[name, f"{1 / row['median_s']:.2f}", f"{1 / row['median_s'] / cores:.2f}",
              f"{MLPERF_PER_CORE:.2f}"] for name, row in res["rows"].items()], "lrrr"))
        results[batch] = res
    tmp.cleanup()
    return results


if __name__ == "__main__":
    main()
