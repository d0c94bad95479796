"""``make bench``: the side-by-side benchmarks of ssd_r34 against the reference baseline,
each in its own process, then a summary of the speed-ups against their targets.

    python benchmarks/run_all.py [--quick] [--only postprocess,train,inference,data,int8]

How long it takes and what each benchmark compares: docs/speed.md.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _common import ROOT, md_table

BENCHES = {  # name -> (script, arguments, arguments with --quick)
    "postprocess": ("bench_postprocess.py", ["--repeats", "7"], ["--repeats", "3"]),
    "train": ("bench_train_step.py", ["--repeats", "7"], ["--repeats", "2"]),
    "inference": ("bench_inference.py", ["--repeats", "5", "--repeats-large", "3"],
                  ["--repeats", "2", "--repeats-large", "1"]),
    "data": ("bench_data.py", ["--repeats", "5"], ["--repeats", "2"]),
    "int8": ("bench_int8.py", ["--repeats", "3", "--repeats-large", "2"],
             ["--repeats", "1", "--repeats-large", "1"]),
}


def run_bench(tree, name, quick, threads, out, env):
    """Run benchmark ``name`` of the checkout ``tree``, its results added to the JSON file
    ``out``; prints the command. Returns the exit status."""
    script, full, short = BENCHES[name]
    cmd = [sys.executable, os.path.join(tree, "benchmarks", script), "--json", out,
           *(short if quick else full), *(["--threads", str(threads)] if threads else [])]
    shown = [os.path.relpath(c) if c.endswith(".py") else c for c in cmd[1:]]
    print(f"\n$ python {' '.join(shown)}", flush=True)
    return subprocess.call(cmd, env=env, cwd=tree)


def load_average():
    return (f"load average (1, 5, 15 min) {', '.join(f'{x:.1f}' for x in os.getloadavg())} on "
            f"{os.cpu_count()} CPUs")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds (noisier)")
    p.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset")
    p.add_argument("--json", default=None, help="write all results to this JSON file")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads for every benchmark (default: torch's)")
    p.add_argument("--omp-wait-policy", default=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
                   choices=["PASSIVE", "ACTIVE"],
                   help="OMP_WAIT_POLICY of the benchmarks (default PASSIVE, or the "
                        "environment's): idle OpenMP workers sleep, leaving the cores of a "
                        "shared machine to the threads with work")
    args = p.parse_args(argv)
    start = time.time()
    env = dict(os.environ, OMP_WAIT_POLICY=args.omp_wait_policy)
    print(f"OMP_WAIT_POLICY={args.omp_wait_policy}; {load_average()} at the start.")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.abspath(args.json or os.path.join(tmp, "bench.json"))
        failed = [name for name in args.only.split(",")
                  if run_bench(ROOT, name, args.quick, args.threads, out, env) != 0]
        results = json.load(open(out)) if os.path.exists(out) else {}
    print("\n### Summary: speed-ups against their targets\n")
    targets = [(r["title"], r["target"]) for r in results.values() if r.get("target")]
    print(md_table(["benchmark", "target", "ssd_r34 speed-up: wall median (wall min)",
                    "CPU time", ""],
                   [[title, f">= {t['minimum']}x",
                     f"{t['speedup_median']:.2f}x ({t['speedup_min']:.2f}x)",
                     f"{t['speedup_cpu']:.2f}x" if t.get("speedup_cpu") else "", t["verdict"]]
                    for title, t in targets] + [[name, "", "", "", "FAILED to run"]
                                                for name in failed], "lrrrl"))
    print(f"\nTotal time {time.time() - start:.0f} s; {load_average()} now.")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
