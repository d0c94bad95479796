"""Where the time of the network goes in ONNX Runtime, float32 against INT8, by operator.

    python benchmarks/profile_int8.py [--size 1200] [--runs 2] [--calib-images 2]

The 1200 config's random network at ``--size``, exported and quantised (``calibrate``), under
ONNX Runtime's profiler on the same image (docs/int8.md).
"""
import collections
import json
import os
import tempfile

import torch

from _common import (cpu_flags, environment, make_cfg, md_table, normalized, parse, parser,
                     random_images, random_model)
from bench_inference import CONFIG

from ssd_r34.export import calibrate, export_network_onnx


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
    model = random_model(make_cfg(CONFIG, "INPUT.FIXED_SIZE", f"({args.size}, {args.size})"))
    H, W = model.input_size
    calib = normalized(model, random_images(args.calib_images + 1, (H, W), seed=7)[0])
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
    totals = {n: sum(t.values()) for n, t in tables.items()}
    rows = [[op] + [f"{t[op]:.1f} ({100 * t[op] / totals[n]:.0f}%)" if t.get(op) else ""
                    for n, t in tables.items()] for op in ops]
    rows.append(["total (node time)"] + [f"{totals[n]:.1f}" for n in tables])
    print(md_table(["operator"] + [f"{n}: ms (share)" for n in tables], rows,
                   "l" + "r" * len(tables)))
    return tables


if __name__ == "__main__":
    main()
