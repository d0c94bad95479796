"""Where the time of the network goes in ONNX Runtime, float32 against INT8, by operator.

    python benchmarks/profile_int8.py [--size 1200] [--runs 2] [--calib-images 2]

Exports the network of configs/ssd_r34_1200.yaml (random weights with randomised BatchNorm
statistics, as bench_int8.py) at ``--size``, quantises it with ssd_r34's onnxruntime route
(``calibrate``), runs both with ONNX Runtime's profiler on the same image and prints, for each,
the time per image by operator type (the profiler's node events, after a warm-up run) and its
share. On CPUs without VNNI / AMX the INT8 convolutions run on AVX2 instructions; the table
shows how much of the INT8 network's time is still convolution and how much the quantise /
dequantise steps add.
"""
import collections
import json
import os
import tempfile

import torch

from _common import cpu_flags, environment, make_cfg, parse, parser
from bench_inference import CONFIG
from reference_impl import randomise_batchnorm
from detectron2.modeling import build_model

from ssd_r34.inference import calibrate, export_network_onnx


def profile(path, image, runs, threads):
    """ONNX Runtime node time by operator type, ms per run (the first run, a warm-up, left
    out)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(os.path.dirname(path), "profile")
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    for _ in range(1 + runs):
        session.run(None, {"images": image})
    with open(session.end_profiling()) as f:
        events = json.load(f)
    warmup = next(e for e in events if e["name"] == "model_run")
    after = warmup["ts"] + warmup["dur"]
    by_op = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= after:
            by_op[e["args"]["op_name"]] += e["dur"] / 1e3 / runs
    return by_op


def main(argv=None):
    p = parser(__doc__.splitlines()[0], repeats=2)
    p.add_argument("--size", type=int, default=1200)
    p.add_argument("--runs", type=int, default=2, help="profiled runs per network")
    p.add_argument("--calib-images", type=int, default=2)
    args = parse(p, argv)
    torch.manual_seed(0)
    size = ["INPUT.FIXED_SIZE", f"({args.size}, {args.size})"]
    model = build_model(make_cfg(CONFIG, *size)).eval()
    randomise_batchnorm(model)
    g = torch.Generator().manual_seed(7)
    H, W = model.input_size
    calib = torch.randint(0, 256, (args.calib_images + 1, 3, H, W), generator=g,
                          dtype=torch.uint8)
    calib = (calib.float() - model.pixel_mean) / model.pixel_std
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_network_onnx(model, os.path.join(tmp, "fp32", "network.onnx"))
        calibrate(model, calib[1:], os.path.join(tmp, "int8"), "onnxruntime")
        int8 = os.path.join(tmp, "int8", "network_int8.onnx")
        image = calib[:1].numpy()
        tables = {"float32": profile(fp32, image, args.runs, threads),
                  "INT8 (QDQ, per-channel)": profile(int8, image, args.runs, threads)}
    print(f"\n### ONNX Runtime profile of the network, {H}x{W}, batch 1\n")
    print(f"{environment()}; CPU flags: {cpu_flags()}; {args.runs} profiled runs each.\n")
    ops = sorted({o for t in tables.values() for o in t},
                 key=lambda o: -max(t.get(o, 0.0) for t in tables.values()))
    names = list(tables)
    print("| operator | " + " | ".join(f"{n}: ms (share)" for n in names) + " |")
    print("|---|" + "---:|" * len(names))
    totals = {n: sum(t.values()) for n, t in tables.items()}
    for op in ops:
        cells = []
        for n in names:
            ms = tables[n].get(op, 0.0)
            cells.append(f"{ms:.1f} ({100 * ms / totals[n]:.0f}%)" if ms else "")
        print(f"| {op} | " + " | ".join(cells) + " |")
    print("| total (node time) | " + " | ".join(f"{totals[n]:.1f}" for n in names) + " |")
    return tables


if __name__ == "__main__":
    main()
