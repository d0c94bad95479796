"""``make bench``: the four side-by-side benchmarks of ssd_r34 against the reference baseline,
each in its own process, then a summary of the speed-ups against the targets of issue 6.

    python benchmarks/run_all.py [--quick] [--only postprocess,train,inference,data]

Each benchmark prints one Markdown table (median and min over interleaved rounds, and the
speed-ups). Takes about 4-6 minutes on 2 CPU cores; ``--quick`` runs fewer rounds.
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
    "train": ("bench_train_step.py", ["--repeats", "5"], ["--repeats", "2"]),
    "inference": ("bench_inference.py", ["--repeats", "5", "--repeats-large", "3"],
                  ["--repeats", "2", "--repeats-large", "1"]),
    "data": ("bench_data.py", ["--repeats", "5"], ["--repeats", "2"]),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds (noisier)")
    p.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset")
    p.add_argument("--json", default=None, help="write all results to this JSON file")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads for every benchmark (default: torch's)")
    args = p.parse_args(argv)
    start = time.time()
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
            if subprocess.call(cmd) != 0:
                failed.append(name)
        results = {}
        if os.path.exists(out):
            with open(out) as f:
                results = json.load(f)
    print("\n### Summary (issue 6 targets, ratio of medians; ratio of minimums in brackets)\n")
    print("| benchmark | target | ssd_r34 speed-up | |")
    print("|---|---:|---:|---|")
    all_met = not failed
    for key, r in results.items():
        t = r.get("target")
        if not t:
            continue
        all_met &= t["met"]
        print(f"| {r['title']} | >= {t['minimum']}x | {t['speedup_median']:.2f}x "
              f"({t['speedup_min']:.2f}x) | {t.get('verdict', 'met' if t['met'] else 'NOT MET')} |")
    for name in failed:
        print(f"| {name} | | | FAILED to run |")
    print(f"\nTotal time {time.time() - start:.0f} s; load average (1, 5, 15 min) now: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs.")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
