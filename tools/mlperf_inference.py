#!/usr/bin/env python
r"""Run SSD-ResNet34 under MLPerf's LoadGen (scenarios SingleStream, MultiStream, Server,
Offline; modes performance and accuracy).

    tools/mlperf_inference.py --config-file configs/ssd_r34_shapes.yaml --dataset shapes_val \
        --scenario Offline --mode accuracy --output out/mlperf/acc \
        MODEL.WEIGHTS output/demo/model_final.pth
    tools/mlperf_accuracy.py --mlperf-accuracy-file out/mlperf/acc/mlperf_log_accuracy.json \
        --annotations ~/.cache/ssd_r34/shapes_v2/val.json

Writes LoadGen's mlperf_log_summary.txt, mlperf_log_detail.txt and mlperf_log_accuracy.json
into --output. The query sample library is the data set (--dataset, any registered COCO-format
data set; sample i is image i of the list MLPerf's accuracy script indexes), pre-processed
into memory by LoadGen's load calls (INPUT.RESIZE_IMPL "cv2-float" for MLPerf's
pre-processing). The system under test is the backend: "pytorch" (the Detectron2 model with
the config's speed options) or "onnxruntime" (the model exported in MLPerf's I/O convention:
--onnx-model, else exported into --output first). LoadGen's settings come from its built-in
mlperf.conf, then --user-conf, then the options below (for short runs: --min-duration,
--min-query-count ...). Trailing ``KEY VALUE`` pairs override the config.
"""
import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

logger = logging.getLogger("ssd_r34.mlperf")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--dataset", required=True, help="a registered data set, e.g. shapes_val, "
                   "coco_2017_val_mlperf")
    p.add_argument("--scenario", required=True,
                   choices=["SingleStream", "MultiStream", "Server", "Offline"])
    p.add_argument("--mode", required=True, choices=["performance", "accuracy"])
    p.add_argument("--output", required=True, metavar="DIR", help="LoadGen's logs go here")
    p.add_argument("--backend", default="pytorch",
                   help="pytorch (default), onnxruntime, or a registered backend")
    p.add_argument("--onnx-model", metavar="FILE",
                   help="onnxruntime: a model exported with tools/export_model.py --mlperf-io")
    p.add_argument("--count", type=int, help="use only the first COUNT images")
    p.add_argument("--batch-size", type=int, default=1, help="Offline: images per backend call")
    p.add_argument("--threads", type=int, default=1, help="SUT worker threads (default 1)")
    g = p.add_argument_group("LoadGen settings (override --user-conf)")
    g.add_argument("--user-conf", metavar="FILE", help="LoadGen user.conf "
                   "(lines 'ssd-resnet34.<Scenario>.<key> = <value>')")
    g.add_argument("--target-qps", type=float,
                   help="Server: server_target_qps; Offline: offline_expected_qps")
    g.add_argument("--target-latency-ms", type=float,
                   help="Server: server_target_latency_ns; SingleStream / MultiStream: the "
                   "expected latency")
    g.add_argument("--latency-percentile", type=float,
                   help="Server / SingleStream / MultiStream target latency percentile (0-1)")
    g.add_argument("--min-duration", type=float, metavar="SECONDS", help="min_duration_ms / 1000")
    g.add_argument("--max-duration", type=float, metavar="SECONDS", help="max_duration_ms / 1000")
    g.add_argument("--min-query-count", type=int)
    g.add_argument("--max-query-count", type=int)
    g.add_argument("--samples-per-query", type=int, help="MultiStream samples per query")
    g.add_argument("--performance-sample-count", type=int,
                   help="samples kept in memory in performance mode (default min(64, count))")
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                   help="config overrides, e.g. MODEL.WEIGHTS model.pth")
    return p


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
    if args.target_latency_ms is not None:
        ns = int(args.target_latency_ms * 1e6)
        o[{"Server": "server_target_latency_ns", "SingleStream": "single_stream_expected_latency_ns",
           "MultiStream": "multi_stream_expected_latency_ns"}.get(args.scenario,
                                                                  "server_target_latency_ns")] = ns
    if args.latency_percentile is not None:
        o[{"Server": "server_target_latency_percentile",
           "SingleStream": "single_stream_target_latency_percentile",
           "MultiStream": "multi_stream_target_latency_percentile"}.get(
               args.scenario, "server_target_latency_percentile")] = args.latency_percentile
    return o


def main(args):
    from detectron2.utils.logger import setup_logger

    from ssd_r34.engine import setup_inference_cfg
    from ssd_r34.mlperf import DatasetQSL, build_backend, build_settings, run_loadgen

    setup_logger(name="ssd_r34")
    os.makedirs(args.output, exist_ok=True)
    cfg = setup_inference_cfg(args.config_file, args.opts)
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
    lost = r["lost"]
    print(f"Samples issued {r['issued']}, answered {r['answered']}, lost {lost}, answered "
          f"twice {len(r['answered_twice'])}, backend errors {r['errors']}")
    if args.mode == "accuracy":
        flags = " --use-inv-map" + (" --remove-48-empty-images" if qsl.remove_empty else "")
        print("Score it with: tools/mlperf_accuracy.py --mlperf-accuracy-file "
              f"{os.path.join(args.output, 'mlperf_log_accuracy.json')} --annotations "
              f"{qsl.json_file}{flags}")
    ok = lost == 0 and not r["answered_twice"] and r["errors"] == 0
    if args.mode == "performance":
        ok = ok and r["summary"].get("Result is") == "VALID"
    return r, ok


if __name__ == "__main__":
    sys.exit(0 if main(get_parser().parse_args())[1] else 1)
