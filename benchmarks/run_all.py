"""``make bench``: the side-by-side benchmarks of ssd_r34 against the reference baseline,
each in its own process, then a summary of the speed-ups against their targets.

    python benchmarks/run_all.py [--quick] [--only postprocess,train,inference,data,int8]

Each benchmark prints one Markdown table (median and min over interleaved rounds, and the
speed-ups). Took 318-522 s on 2 CPU cores (README "Speed"); ``--quick`` runs fewer rounds. The
benchmark processes run with OMP_WAIT_POLICY=PASSIVE unless told otherwise (see
``--omp-wait-policy``): on a machine that other jobs keep busy, spinning OpenMP workers take
the cores from the threads that have work, which hurts code made of many short tensor ops far
more than the same network convolutions.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHES = {  # name -> (script, arguments, arguments with --quick)
    "postprocess": ("bench_postprocess.py", ["--repeats", "7"], ["--repeats", "3"]),
    "train": ("bench_train_step.py", ["--repeats", "7"], ["--repeats", "2"]),
    "inference": ("bench_inference.py", ["--repeats", "5", "--repeats-large", "3"],
                  ["--repeats", "2", "--repeats-large", "1"]),
    "data": ("bench_data.py", ["--repeats", "5"], ["--repeats", "2"]),
    "int8": ("bench_int8.py", ["--repeats", "3", "--repeats-large", "2"],
             ["--repeats", "1", "--repeats-large", "1"]),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds (noisier)")
    p.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset")
    p.add_argument("--json", default=None, help="write all results to this JSON file")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads for every benchmark (default: torch's)")
    p.add_argument("--omp-wait-policy", default=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
                   choices=["PASSIVE", "ACTIVE"],
                   help="OMP_WAIT_POLICY of the benchmark processes (default PASSIVE, or the "
                        "environment's): idle OpenMP workers sleep instead of spinning, so on a "
                        "machine shared with other jobs they do not take the cores from the "
                        "threads that have work. Same for ssd_r34 and the baseline.")
    args = p.parse_args(argv)
    start = time.time()
    env = dict(os.environ, OMP_WAIT_POLICY=args.omp_wait_policy)
    print(f"OMP_WAIT_POLICY={args.omp_wait_policy}; load average (1, 5, 15 min) at the start: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs.")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.json or os.path.join(tmp, "bench.json")
        failed = []
        for name in args.only.split(","):
            script, full, quick = BENCHES[name]
            cmd = [sys.executable, os.path.join(HERE, script), "--json", out,
                   *(quick if args.quick else full),
                   *(["--threads", str(args.threads)] if args.threads else [])]
            shown = [os.path.relpath(c) if c.endswith(".py") else c for c in cmd[1:]]
            print(f"\n$ python {' '.join(shown)}", flush=True)
            if subprocess.call(cmd, env=env) != 0:
                failed.append(name)
        results = {}
        if os.path.exists(out):
            with open(out) as f:
                results = json.load(f)
    print("\n### Summary: speed-ups against their targets\n")
    print("| benchmark | target | ssd_r34 speed-up: wall median (wall min) | CPU time | |")
    print("|---|---:|---:|---:|---|")
    all_met = not failed
    for key, r in results.items():
        t = r.get("target")
        if not t:
            continue
        all_met &= t["met"]
        cpu = f"{t['speedup_cpu']:.2f}x" if t.get("speedup_cpu") else ""
        print(f"| {r['title']} | >= {t['minimum']}x | {t['speedup_median']:.2f}x "
              f"({t['speedup_min']:.2f}x) | {cpu} | {t['verdict']} |")
    for name in failed:
        print(f"| {name} | | | | FAILED to run |")
    print(f"\nTotal time {time.time() - start:.0f} s; load average (1, 5, 15 min) now: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs.")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
