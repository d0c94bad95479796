#!/usr/bin/env python
r"""LoadGen load on this machine: SingleStream, Offline, then a Server sweep for the highest
target QPS that LoadGen calls VALID, and twice that load (docs/mlperf_inference.md).

    benchmarks/bench_mlperf.py --config-file configs/ssd_r34_shapes.yaml --dataset shapes_val \
        --latency-ms 100 --qps 5 10 20 40 --output out/bench_mlperf MODEL.WEIGHTS model.pth
"""
import argparse
import os
import time

from _common import md_table


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--dataset", default="shapes_val")
    p.add_argument("--count", type=int, default=None)
    p.add_argument("--output", required=True)
    p.add_argument("--backend", default="pytorch")
    p.add_argument("--latency-ms", type=float, default=100.0, help="Server latency bound")
    p.add_argument("--percentile", type=float, default=0.99, help="Server latency percentile")
    p.add_argument("--qps", type=float, nargs="+", default=[5, 10, 20, 40],
                   help="Server target QPS to try, ascending")
    p.add_argument("--min-duration", type=float, default=10.0, help="seconds per test")
    p.add_argument("--server-min-queries", type=int, default=500,
                   help="Server min_query_count (early stopping at p99 needs ~460)")
    p.add_argument("--batch-size", type=int, default=8, help="Offline batch")
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE")
    return p


def main(args):
    from ssd_r34.engine import setup_inference_cfg
    from ssd_r34.engine.mlperf import DatasetQSL, build_backend, build_settings, run_loadgen

    cfg = setup_inference_cfg(args.config_file, args.opts)
    qsl = DatasetQSL(cfg, args.dataset, count=args.count)
    backend = build_backend(args.backend, cfg, args)
    # a first estimate of the latency, for LoadGen's expected latency / QPS
    first = list(range(min(8, qsl.count)))
    qsl.load_samples(first)
    backend.predict([qsl.get(0)])
    t = time.perf_counter()
    for i in first:
        backend.predict([qsl.get(i)])
    latency = (time.perf_counter() - t) / len(first)
    qsl.unload_samples(first)
    print(f"one image: {1000 * latency:.1f} ms (estimate)")
    rows, ms = [], int(args.min_duration * 1000)

    def run(name, scenario, overrides, batch_size=1):
        s = build_settings(scenario, "performance", None, {"min_duration_ms": ms, **overrides})
        r = run_loadgen(backend, qsl, scenario, "performance", os.path.join(args.output, name),
                        s, batch_size=batch_size, print_summary=False)
        sm = r["summary"]
        rate = sm.get("Completed samples per second", sm.get(
            "Samples per second", sm.get("QPS w/o loadgen overhead", "")))
        p99 = sm.get("99.00 percentile latency (ns)", sm.get("90th percentile latency (ns)", ""))
        rows.append([name, sm.get("Result is", "?"), rate, p99, r["issued"], r["answered"],
                     r["lost"], len(r["answered_twice"])])
        print(rows[-1], flush=True)
        return sm.get("Result is") == "VALID"

    def server(name, qps):
        return run(name, "Server", {
            "min_query_count": args.server_min_queries, "server_target_qps": qps,
            "server_target_latency_ns": int(args.latency_ms * 1e6),
            "server_target_latency_percentile": args.percentile})

    run("SingleStream", "SingleStream", {"min_query_count": 100,
                                         "single_stream_expected_latency_ns": int(latency * 1e9)})
    run("Offline", "Offline", {"min_query_count": 1, "offline_expected_qps": 1.0 / latency},
        args.batch_size)
    best = None
    for q in args.qps:
        if not server(f"Server_{q:g}qps", q):
            break
        best = q
    if best is not None:
        server(f"Server_{2 * best:g}qps_(2x)", 2 * best)
    print(md_table(["test", "LoadGen result", "samples/s", "p99 (ns)", "issued", "answered",
                    "lost", "answered twice"], rows))
    print(f"Highest Server target QPS VALID at p{100 * args.percentile:g} <= "
          f"{args.latency_ms:g} ms: {best}")


if __name__ == "__main__":
    main(get_parser().parse_args())
