"""Before/after: the ``make bench`` benchmarks of an earlier git revision and of this working
tree, in one run, side by side.

    python benchmarks/compare_revisions.py --old REV [--quick] [--passes N]
        [--only postprocess,train,...]

The earlier revision is checked out in a temporary git worktree and imported from there
(``PYTHONPATH``), with this .venv. Benchmark by benchmark, the old tree's script runs and then
this tree's, so both see the same machine state; ``--passes 2`` repeats
each pair with the other tree first. Each script times ssd_r34 against the
reference baseline in its own process; the table gives both speed-ups and the ratio of the
ssd_r34 medians (old / new: above 1 means this tree is faster).

Only the rows with ssd_r34's defaults (float32) are compared. Unless ``--keep-bf16``, CPU
autocast to bfloat16 is switched off in both trees (a ``sitecustomize`` on their
``PYTHONPATH``), so their bfloat16 rows run in float32 and take seconds instead of minutes on
CPUs without bf16 instructions; those rows are then not bfloat16 and are left out of the table.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from run_all import BENCHES  # noqa: E402


NO_BF16 = """import torch

_init = torch.autocast.__init__


def _float32_only(self, device_type, dtype=None, enabled=True, cache_enabled=None):
    if device_type == "cpu" and dtype == torch.bfloat16:
        enabled = False
    _init(self, device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


torch.autocast.__init__ = _float32_only
"""


def run_tree(tree, name, quick, threads, env, out):
    """Run benchmark ``name`` of the checkout ``tree``; return its JSON results."""
    script, full, short = BENCHES[name]
    cmd = [sys.executable, os.path.join(tree, "benchmarks", script), "--json", out,
           *(short if quick else full), *(["--threads", str(threads)] if threads else [])]
    env = dict(env, PYTHONPATH=tree + os.pathsep + env.get("PYTHONPATH", ""))
    print(f"\n$ ({os.path.relpath(tree, ROOT) if tree != ROOT else '.'}) python "
          f"benchmarks/{script} {' '.join(cmd[2:])}", flush=True)
    if subprocess.call(cmd, env=env, cwd=tree) != 0:
        return None
    with open(out) as f:
        return json.load(f)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True, help="git revision to compare with (e.g. a commit)")
    p.add_argument("--quick", action="store_true", help="fewer rounds (noisier)")
    p.add_argument("--only", default="postprocess,train,inference,data",
                   help="comma-separated subset of run_all's benchmarks present in both trees")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--passes", type=int, default=1,
                   help="run each benchmark pair this many times, alternating which tree goes "
                        "first (old-new, new-old, ...); one table row per pass")
    p.add_argument("--keep-bf16", action="store_true",
                   help="leave CPU bfloat16 autocast on (slow without bf16 instructions)")
    args = p.parse_args(argv)
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.keep_bf16:
            site = os.path.join(tmp, "site")
            os.makedirs(site)
            with open(os.path.join(site, "sitecustomize.py"), "w") as f:
                f.write(NO_BF16)
            env["PYTHONPATH"] = site + os.pathsep + env.get("PYTHONPATH", "")
        old_tree = os.path.join(tmp, "old")
        subprocess.check_call(["git", "-C", ROOT, "worktree", "add", "--detach", "-q", old_tree,
                               args.old])
        try:
            for name, k in [(n, k) for n in args.only.split(",") for k in range(args.passes)]:
                res = {}
                order = [("old", old_tree), ("new", ROOT)]
                for label, tree in order if k % 2 == 0 else order[::-1]:
                    out = os.path.join(tmp, f"{label}-{name}-{k}.json")
                    res[label] = run_tree(tree, name, args.quick, args.threads, env, out)
                if None in res.values():
                    rows.append((name, None))
                    continue
                for key, new in res["new"].items():
                    old = res["old"].get(key)
                    if old is None or "target" not in new:
                        continue
                    row = new["target"]["row"]
                    if row not in old["rows"]:
                        continue
                    o, n = old["rows"][row], new["rows"][row]
                    title = new["title"] + (f" (pass {k + 1}, {'old' if k % 2 == 0 else 'new'}"
                                            " first)" if args.passes > 1 else "")
                    rows.append((title, (o["speedup_median"], n["speedup_median"],
                                         o["median_s"], n["median_s"])))
        finally:
            subprocess.call(["git", "-C", ROOT, "worktree", "remove", "--force", old_tree])
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    print(f"\n### Before ({args.old}) and after (working tree at {head}), one run\n")
    print("| benchmark | speed-up over baseline, before | after | ssd_r34 median before (ms) "
          "| after (ms) | before / after |")
    print("|---|---:|---:|---:|---:|---:|")
    for title, r in rows:
        if r is None:
            print(f"| {title} | FAILED to run | | | | |")
            continue
        so, sn, mo, mn = r
        print(f"| {title} | {so:.2f}x | {sn:.2f}x | {mo * 1e3:.1f} | {mn * 1e3:.1f} | "
              f"{mo / mn:.2f} |")
    return 0 if all(r is not None for _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
