"""Run SSD-ResNet34 under MLPerf's LoadGen (scenarios SingleStream, MultiStream, Server,
Offline; modes performance and accuracy); LoadGen's logs go into --output. Usage:
docs/mlperf_inference.md."""
import json
import logging
import os

from ..engine.mlperf import (MODES, SCENARIOS, DatasetQSL, build_backend, build_settings,
                             run_loadgen)
from . import args as cli

logger = logging.getLogger(__name__)


def get_parser():
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0],
                           epilog="docs/mlperf_inference.md")
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--dataset", required=True, help="a registered data set (coco_2017_val_mlperf)")
    p.add_argument("--scenario", required=True, choices=SCENARIOS)
    p.add_argument("--mode", required=True, choices=MODES)
    p.add_argument("--output", required=True, metavar="DIR", help="LoadGen's logs go here")
    p.add_argument("--backend", default="pytorch", help="pytorch (default), onnxruntime, "
                   "openvino, or a registered backend")
    p.add_argument("--onnx-model", metavar="FILE",
                   help="onnxruntime: a model exported with tools/export_model.py --mlperf-io")
    p.add_argument("--count", type=int, help="use only the first COUNT images")
    p.add_argument("--batch-size", type=int, default=1, help="Offline: images per backend call")
    p.add_argument("--threads", type=int, default=1, help="SUT worker threads (default 1)")
    g = p.add_argument_group("LoadGen settings (override --user-conf)")
    g.add_argument("--user-conf", metavar="FILE", help="LoadGen's user.conf")
    g.add_argument("--target-qps", type=float,
                   help="Server: server_target_qps; Offline: offline_expected_qps")
    g.add_argument("--target-latency-ms", type=float, help="Server: the latency bound; "
                   "SingleStream / MultiStream: the expected latency")
    g.add_argument("--latency-percentile", type=float, help="target latency percentile (0-1)")
    g.add_argument("--min-duration", type=float, metavar="SECONDS", help="min_duration_ms / 1000")
    g.add_argument("--max-duration", type=float, metavar="SECONDS", help="max_duration_ms / 1000")
    g.add_argument("--min-query-count", type=int)
    g.add_argument("--max-query-count", type=int)
    g.add_argument("--samples-per-query", type=int, help="MultiStream samples per query")
    g.add_argument("--performance-sample-count", type=int, help="default min(64, count)")
    return cli.add_common_arguments(p)


def loadgen_overrides(args):
    """TestSettings attribute -> value from the command line (None: not given)."""
    ms = (lambda s: None if s is None else int(round(s * 1000)))
    o = {"min_duration_ms": ms(args.min_duration), "max_duration_ms": ms(args.max_duration),
         "min_query_count": args.min_query_count, "max_query_count": args.max_query_count,
         "multi_stream_samples_per_query": args.samples_per_query}
    if args.target_qps is not None:
        key = {"Server": "server_target_qps", "Offline": "offline_expected_qps"}.get(args.scenario)
        if key is None:
            raise SystemExit("--target-qps applies to Server and Offline only.")
        o[key] = args.target_qps
    prefix = {"SingleStream": "single_stream", "MultiStream": "multi_stream"}.get(args.scenario)
    if args.target_latency_ms is not None:
        o[f"{prefix}_expected_latency_ns" if prefix else "server_target_latency_ns"] = \
            int(args.target_latency_ms * 1e6)
    if args.latency_percentile is not None:
        o[f"{prefix or 'server'}_target_latency_percentile"] = args.latency_percentile
    return o


def main(argv=None):
    """Returns (run_loadgen's dict with the run's settings, ok)."""
    args = get_parser().parse_args(argv)
    cli.setup_tool_logger()
    os.makedirs(args.output, exist_ok=True)
    cfg = cli.inference_cfg(args)
    qsl = DatasetQSL(cfg, args.dataset, count=args.count,
                     performance_sample_count=args.performance_sample_count)
    backend = build_backend(args.backend, cfg, args)
    settings = build_settings(args.scenario, args.mode, args.user_conf, loadgen_overrides(args))
    logger.info(f"{args.scenario} {args.mode} on {qsl.count} image(s) of {args.dataset}, "
                f"backend {args.backend}, INPUT.RESIZE_IMPL {cfg.INPUT.RESIZE_IMPL}")
    r = run_loadgen(backend, qsl, args.scenario, args.mode, args.output, settings,
                    batch_size=args.batch_size, threads=args.threads)
    r.update(scenario=args.scenario, mode=args.mode, dataset=args.dataset, count=qsl.count,
             backend=args.backend, resize_impl=cfg.INPUT.RESIZE_IMPL)
    with open(os.path.join(args.output, "run.json"), "w") as f:
        json.dump(r, f, indent=1)
    print(f"Samples issued {r['issued']}, answered {r['answered']}, lost {r['lost']}, answered "
          f"twice {len(r['answered_twice'])}, backend errors {r['errors']}")
    if args.mode == "accuracy":
        flags = " --use-inv-map" + (" --remove-48-empty-images" if qsl.remove_empty else "")
        print("Score it with: tools/mlperf_accuracy.py --mlperf-accuracy-file "
              f"{os.path.join(args.output, 'mlperf_log_accuracy.json')} --annotations "
              f"{qsl.json_file}{flags}")
    ok = r["lost"] == 0 and not r["answered_twice"] and r["errors"] == 0
    if args.mode == "performance":
        ok = ok and r["summary"].get("Result is") == "VALID"
    return r, ok
