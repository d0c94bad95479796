"""Before/after: the ``make bench`` benchmarks of an earlier git revision and of this working
tree, in one run, side by side (docs/speed.md).

    python benchmarks/compare_revisions.py --old REV [--quick] [--passes N] [--only train,...]

The old tree runs from a temporary git worktree with this .venv. Only ssd_r34's default
(float32) rows are compared; unless ``--keep-bf16``, CPU bfloat16 autocast is off in both.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from _common import ROOT, md_table
from run_all import run_bench

NO_BF16 = """import torch

_init = torch.autocast.__init__


def _float32_only(self, device_type, dtype=None, enabled=True, cache_enabled=None):
    if device_type == "cpu" and dtype == torch.bfloat16:
        enabled = False
    _init(self, device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


torch.autocast.__init__ = _float32_only
"""


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
            os.makedirs(os.path.join(tmp, "site"))
            with open(os.path.join(tmp, "site", "sitecustomize.py"), "w") as f:
                f.write(NO_BF16)
            env["PYTHONPATH"] = os.path.join(tmp, "site") + os.pathsep + env.get("PYTHONPATH", "")
        old_tree = os.path.join(tmp, "old")
        subprocess.check_call(["git", "-C", ROOT, "worktree", "add", "--detach", "-q", old_tree,
                               args.old])
        try:
            for name, k in [(n, k) for n in args.only.split(",") for k in range(args.passes)]:
                order = [("old", old_tree), ("new", ROOT)]
                res = {}  # label -> JSON results of the tree's benchmark (None: failed)
                for label, tree in order if k % 2 == 0 else order[::-1]:
                    out = os.path.join(tmp, f"{label}-{name}-{k}.json")
                    tree_env = dict(env, PYTHONPATH=tree + os.pathsep + env.get("PYTHONPATH", ""))
                    res[label] = json.load(open(out)) if run_bench(
                        tree, name, args.quick, args.threads, out, tree_env) == 0 else None
                if None in res.values():
                    rows.append([name, "FAILED to run", "", "", "", ""])
                    continue
                for key, new in res["new"].items():
                    row = new.get("target", {}).get("row")
                    if row not in res["old"].get(key, {}).get("rows", {}):
                        continue
                    o, n = res["old"][key]["rows"][row], new["rows"][row]
                    title = new["title"] + (f" (pass {k + 1}, {'old' if k % 2 == 0 else 'new'}"
                                            " first)" if args.passes > 1 else "")
                    rows.append([title, f"{o['speedup_median']:.2f}x",
                                 f"{n['speedup_median']:.2f}x", f"{o['median_s'] * 1e3:.1f}",
                                 f"{n['median_s'] * 1e3:.1f}",
                                 f"{o['median_s'] / n['median_s']:.2f}"])
        finally:
            subprocess.call(["git", "-C", ROOT, "worktree", "remove", "--force", old_tree])
    head = subprocess.check_output(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], text=True)
    print(f"\n### Before ({args.old}) and after (working tree at {head.strip()}), one run\n")
    print(md_table(["benchmark", "speed-up over baseline, before", "after",
                    "ssd_r34 median before (ms)", "after (ms)", "before / after"], rows,
                   "lrrrrr"))
    return 0 if all(r[1] != "FAILED to run" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
