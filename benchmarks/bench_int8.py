"""Inference by precision and engine, 1200x1200 (strides 3 3 2 2 2 2), batch 1 and 4, per image.

End to end as bench_inference.py: from resized uint8 images to detections in the original
image's pixels (480x640). Same weights everywhere (random, BatchNorm statistics randomised,
heads scaled to a trained model's logit range, class biases shifted to ~11000 candidates per
image as in bench_inference.py), same images. Rows:

* baseline: the reference (``ReferenceSSDR34`` forward + ``reference_decode``), float32;
* ssd_r34 float32 (today's defaults), ssd_r34 ``INFERENCE_DTYPE bfloat16`` (autocast);
* ssd_r34 with ``INFERENCE_BACKEND onnxruntime`` / ``openvino``: the network exported and run by
  the engine, ssd_r34's own pre- and post-processing (``attach_backend``), float32 and INT8
  (``INFERENCE_DTYPE int8``, calibrated here on ``--calib-images`` images);
* what a user would run instead: the whole exported graph (network + postprocess,
  ``SSDExportModule`` ONNX, one image per call) in ONNX Runtime and in OpenVINO, float32.
  Their INT8 counterparts are the engines' own quantisers on the same network, i.e. the
  ssd_r34 INT8 backend rows (the postprocess is float32 in every row).

Engine settings: ONNX Runtime CPU provider, ORT_ENABLE_ALL, one intra-op thread per core;
OpenVINO CPU plugin, PERFORMANCE_HINT LATENCY, static input shape, INFERENCE_PRECISION_HINT f32
(bf16 only on CPUs with bf16 instructions). Also: images/s per core beside MLPerf's published
CPU result (about 1.1 images/s per core: 86 images/s Offline, 2-socket Xeon 8380, 80 cores, INT8).
"""
import os
import tempfile

import numpy as np
import torch

from _common import (bf16_rows, compare_loosely, cpu_flags, make_cfg, parse, parser, report,
                     time_interleaved)
from baseline import (ReferenceSSDR34, copy_weights_to_reference, reference_default_boxes,
                      reference_inference)
from bench_inference import CONFIG, ORIGINAL, batch_inputs, benchmark_model, detector
from detectron2.modeling import build_model

from ssd_r34.export import SSDExportModule, detections_to_instances, export_onnx
from ssd_r34.inference import EngineNetwork, attach_backend, calibrate

MLPERF_PER_CORE = 86.0 / 80  # images/s per core, MLPerf inference CPU result (INT8, Offline)
BASELINE = "baseline (reference, float32)"


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
    state = ours.state_dict()

    def variant(*opts):
        m = build_model(make_cfg(CONFIG, *opts)).eval()
        m.load_state_dict(state)
        return m

    bf16 = variant("MODEL.SSD.INFERENCE_DTYPE", "bfloat16")
    ref = ReferenceSSDR34(81, (3, 3, 2, 2, 2, 2)).eval()
    copy_weights_to_reference(ours, ref)
    dboxes = reference_default_boxes((H, W), ref.head_output_sizes((H, W)))

    tmp = tempfile.TemporaryDirectory(prefix="bench_int8_")
    g = torch.Generator().manual_seed(7)
    calib = torch.randint(0, 256, (args.calib_images, 3, H, W), generator=g, dtype=torch.uint8)
    calib = (calib.float() - ours.pixel_mean) / ours.pixel_std
    engines = {}
    for backend in ("onnxruntime", "openvino"):
        folder = os.path.join(tmp.name, backend)
        if backend in int8_backends:
            calibrate(ours, calib, folder, backend)
        for dtype in ("float32", "int8") if backend in int8_backends else ("float32",):
            m = variant("MODEL.SSD.INFERENCE_BACKEND", backend, "MODEL.SSD.INFERENCE_DTYPE",
                        dtype, "MODEL.SSD.INT8.CALIBRATION_DIR", folder)
            engines[(backend, dtype)] = attach_backend(m, m_cfg(backend, dtype, folder))

    # What a user would run instead: the whole exported graph, one uint8 image per call.
    full = export_onnx(SSDExportModule(ours).eval(), torch.zeros(1, 3, H, W, dtype=torch.uint8),
                       os.path.join(tmp.name, "full.onnx"))
    full_ort = EngineNetwork("onnxruntime", full)
    full_ov = EngineNetwork("openvino", full)

    def run_full(engine, images):
        out = []
        for img in images:
            x = img[None].numpy()
            if engine.backend == "onnxruntime":
                res = engine._session.run(["boxes", "scores", "classes"], {"image": x})
            else:
                req = engine._openvino_request(tuple(x.shape))
                req.infer({0: x})
                res = [np.array(req.get_output_tensor(i).data, copy=True) for i in range(3)]
            b, s, c = (torch.from_numpy(np.asarray(r)) for r in res)
            out.append(detections_to_instances(b, s, c, (H, W), *ORIGINAL))
        return out

    labels = {
        "ssd_r34 float32 (defaults, PyTorch)": ours,
        "ssd_r34 bfloat16 (INFERENCE_DTYPE bfloat16, PyTorch autocast)": bf16,
        "ssd_r34 float32, INFERENCE_BACKEND onnxruntime": engines[("onnxruntime", "float32")],
        "ssd_r34 float32, INFERENCE_BACKEND openvino": engines[("openvino", "float32")],
    }
    if "onnxruntime" in int8_backends:
        labels["ssd_r34 INT8, INFERENCE_BACKEND onnxruntime (QDQ, per-channel)"] = \
            engines[("onnxruntime", "int8")]
    if "openvino" in int8_backends:
        labels["ssd_r34 INT8, INFERENCE_BACKEND openvino (NNCF)"] = engines[("openvino", "int8")]
    labels = {k: v for k, v in labels.items()
              if k.startswith("ssd_r34 float32 (defaults") or not any(w in k for w in skip)}
    results = {}
    cores = torch.get_num_threads()  # the rows use this many threads
    for batch in [int(b) for b in args.batches.split(",")]:
        images, inputs = batch_inputs(batch, (H, W))

        def run(model):
            return detector(model, inputs)

        fns = {BASELINE: lambda: reference_inference(ref, images, dboxes, [ORIGINAL] * batch)}
        fns.update({name: run(m) for name, m in labels.items()})
        fns["ONNX Runtime float32 (whole exported graph)"] = lambda: run_full(full_ort, images)
        fns["OpenVINO float32 (whole exported graph)"] = lambda: run_full(full_ov, images)
        bf16 = args.bf16 != "off" and (bf16_rows(args)
                                       or str(batch) in args.bf16_batches.split(","))
        row_skip = skip + ([] if bf16 else ["bfloat16"])
        fns = {k: v for k, v in fns.items()
               if k in (BASELINE, "ssd_r34 float32 (defaults, PyTorch)")
               or not any(w in k for w in row_skip)}
        reference_out = run(ours)()
        notes = [f"CPU flags: {cpu_flags()}; torch {torch.__version__}; "
                 f"{_versions()}."]
        for name, fn in fns.items():
            if name in (BASELINE, "ssd_r34 float32 (defaults, PyTorch)"):
                continue
            notes.append(f"{name} vs ssd_r34 float32: {compare_loosely(fn(), reference_out)}.")
        repeats = args.repeats if batch == 1 else args.repeats_large
        times = time_interleaved(fns, repeats)
        res = report(f"Inference by precision and engine: {H}x{W}, batch {batch} (per image)",
                     times, BASELINE, target=(_fastest(times, fns), 20.0), per=batch,
                     notes=notes, json_path=args.json, key=f"int8_batch{batch}")
        print(f"\n| implementation | images/s | images/s per core ({cores} threads) | "
              f"MLPerf CPU INT8 result per core |\n|---|---:|---:|---:|")
        for name, row in res["rows"].items():
            ips = 1.0 / row["median_s"]
            print(f"| {name} | {ips:.2f} | {ips / cores:.2f} | {MLPERF_PER_CORE:.2f} |")
        results[batch] = res
    tmp.cleanup()
    return results


def m_cfg(backend, dtype, folder):
    return make_cfg(CONFIG, "MODEL.SSD.INFERENCE_BACKEND", backend, "MODEL.SSD.INFERENCE_DTYPE",
                    dtype, "MODEL.SSD.INT8.CALIBRATION_DIR", folder)


def _fastest(times, fns):
    import statistics

    ours = [n for n in fns if n.startswith("ssd_r34")]
    return min(ours, key=lambda n: statistics.median(times[n]))


def _versions():
    import onnxruntime
    import openvino

    return f"onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__}"


if __name__ == "__main__":
    main()
