#!/usr/bin/env python
"""Hand-written mutants of ssd_r34, each of which some test must kill (``make mutants``).

Each mutant is a textual patch (one exact, unique piece of source replaced by another)
that breaks one setting or convention. For each, the repository is copied to a temporary
folder (the real tree is never edited), the patch is applied there, and the mutant's
killing tests are run there with ``pytest -x -m "not slow"`` (those of ``make test``). A
mutant is killed when a test fails.
Before the mutants, the same tests run once on an unpatched copy, which must pass.

Prints a table mutant -> killing test -> killed / SURVIVED and exits 1 if any mutant
survived (or no longer applies), 2 if the unpatched copy fails its tests.

    python tests/mutants/run_mutants.py            # all mutants, 2 at a time
    python tests/mutants/run_mutants.py --jobs 1 --only nms_thresh_ignored,betas_ignored
    python tests/mutants/run_mutants.py --list
"""
import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IGNORE = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".pytest_cache", ".venv",
                                "output", "*.pth", "*.egg-info", "build")


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: Tuple[str, ...]  # pytest arguments: files, node ids, -k expressions


C = "tests/modeling/test_contracts.py"
MUTANTS = [
    Mutant("nms_thresh_ignored", "NMS at 0.5 whatever MODEL.SSD.NMS_THRESH_TEST says",
           "ssd_r34/modeling/postprocessing.py",
           "torchvision.ops.nms(b, s, model.test_nms_thresh)",
           "torchvision.ops.nms(b, s, 0.5)",
           (C, "-k", "inference_settings")),
    Mutant("box_order_swapped", "predictions location-major within a level (the reference "
           "is box-type-major: a*h*w + y*w + x)",
           "ssd_r34/modeling/meta_arch.py",
           "permute(0, 1, 3, 4, 2).reshape(n, -1, k)",
           "permute(0, 3, 4, 1, 2).reshape(n, -1, k)",
           (C, "-k", "head_name")),
    Mutant("background_first", "inference reads class 0 as background (ours is last)",
           "ssd_r34/modeling/postprocessing.py",
           "dim=1)[:, :num_classes].t()",
           "dim=1)[:, 1:].t()",
           (C, "-k", "inference_settings or strict_by_hand")),
    Mutant("forced_match_off", "no forced match of each ground truth's best default box",
           "ssd_r34/modeling/box_ops.py",
           "is_forced = forced >= 0",
           "is_forced = torch.zeros_like(forced, dtype=torch.bool)",
           (C, "-k", "iou_threshold")),
    Mutant("neg_pos_ratio_fixed_3", "hard negative mining at 3:1 whatever "
           "MODEL.SSD.NEG_POS_RATIO says",
           "ssd_r34/modeling/meta_arch.py",
           "hard_negative_mask(ce, positive, self.neg_pos_ratio)",
           "hard_negative_mask(ce, positive, 3)",
           (C, "-k", "neg_pos_ratio")),
    Mutant("iou_threshold_ignored", "positives at IoU > 0.5 whatever MODEL.SSD.IOU_THRESHOLD "
           "says", "ssd_r34/modeling/box_ops.py",
           "(best_iou > iou_threshold)", "(best_iou > 0.5)",
           (C, "-k", "iou_threshold")),
    Mutant("bbox_reg_weights_ignored", "box coding weights fixed at (10, 10, 5, 5)",
           "ssd_r34/modeling/meta_arch.py",
           "Box2BoxTransform(weights=cfg.MODEL.SSD.BBOX_REG_WEIGHTS)",
           "Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0))",
           (C, "-k", "bbox_reg_weights")),
    Mutant("score_thresh_inclusive", "scores >= SCORE_THRESH_TEST kept (the reference: >)",
           "ssd_r34/modeling/postprocessing.py",
           "scores > model.test_score_thresh", "scores >= model.test_score_thresh",
           (C, "-k", "strict_by_hand")),
    Mutant("betas_ignored", "AdamW with its default betas whatever SOLVER.BETAS says",
           "ssd_r34/engine/defaults.py",
           "betas=tuple(cfg.SOLVER.BETAS)", "betas=(0.9, 0.999)",
           (C, "-k", "betas")),
    Mutant("crop_disabled", "no SSD random crop even with INPUT.SSD.CROP True",
           "ssd_r34/data/transforms.py",
           "    if crop:", "    if False:",
           (C, "-k", "crop_setting")),
    Mutant("crop_always", "SSD random crop even with INPUT.SSD.CROP False",
           "ssd_r34/data/transforms.py",
           "    if crop:", "    if True:",
           (C, "-k", "crop_setting")),
    Mutant("colour_jitter_ignored", "colour jitter at its default strengths whatever "
           "INPUT.SSD.COLOR_JITTER says", "ssd_r34/data/transforms.py",
           "augs.append(RandomColorJitter(*color_jitter))",
           "augs.append(RandomColorJitter())",
           (C, "-k", "colour_jitter")),
    Mutant("digest_ignores_values", "weights_digest hashes names, dtypes and shapes only",
           "ssd_r34/engine/hooks.py",
           "h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())",
           "h.update(b\"\")",
           ("tests/engine/test_replica_check.py", "-k", "digest or value or every_parameter")),
    Mutant("default_box_sizes_ignored", "default boxes of the reference's sizes whatever "
           "MODEL.SSD.DEFAULT_BOX_SIZES says", "ssd_r34/modeling/anchor_generator.py",
           "default_box_sizes(self.box_sizes, self.aspect_ratios, level,",
           "default_box_sizes([21, 45, 99, 153, 207, 261, 315], self.aspect_ratios, level,",
           (C, "-k", "default_box")),
    Mutant("default_box_ratios_ignored", "default boxes of the reference's ratios whatever "
           "MODEL.SSD.DEFAULT_BOX_RATIOS says", "ssd_r34/modeling/anchor_generator.py",
           "    for r in ratios[level]:",
           "    for r in [[2], [2, 3], [2, 3], [2, 3], [2], [2]][level]:",
           (C, "-k", "default_box")),
    Mutant("head_name_ignored", "always SSDHead whatever MODEL.SSD.HEAD_NAME says",
           "ssd_r34/modeling/head.py",
           "SSD_HEAD_REGISTRY.get(cfg.MODEL.SSD.HEAD_NAME)", "SSD_HEAD_REGISTRY.get(\"SSDHead\")",
           (C, "-k", "head_name")),
    Mutant("check_replicas_ignored", "the replica check runs even with SOLVER.CHECK_REPLICAS "
           "False", "ssd_r34/engine/defaults.py",
           "if cfg.SOLVER.CHECK_REPLICAS:", "if True:",
           ("tests/engine/test_replica_check.py", "-k", "check_replicas_setting")),
    Mutant("replica_mismatch_passes", "differing parameters across ranks do not raise",
           "ssd_r34/engine/hooks.py",
           "        if bad:\n            raise RuntimeError",
           "        if False:\n            raise RuntimeError",
           ("tests/engine/test_replica_check.py", "-k", "differs_on_one_rank")),
    Mutant("unknown_optimizer_is_sgd", "an unknown SOLVER.OPTIMIZER silently trains with SGD",
           "ssd_r34/engine/defaults.py",
           "if name == \"SGD\":", "if name != \"AdamW\":",
           ("tests/cli/test_error_branches.py", "-k", "unknown_optimizer")),
]


def copy_tree(dest):
    shutil.copytree(ROOT, dest, ignore=IGNORE, symlinks=True)
    return dest


def apply(mutant, tree):
    path = os.path.join(tree, mutant.path)
    with open(path) as f:
        text = f.read()
    n = text.count(mutant.old)
    if n != 1:
        raise ValueError(f"{mutant.name}: the text to replace occurs {n} times in {mutant.path}")
    with open(path, "w") as f:
        f.write(text.replace(mutant.old, mutant.new))


def run_pytest(tree, args, timeout):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
               PYTHONWARNINGS="ignore")
    # -m "not slow": the killing tests are `make test`'s, so the fast suite alone kills each mutant
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rf",
           "-m", "not slow", *args]
    try:
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return None, (e.stdout or "") if isinstance(e.stdout, str) else ""
    return proc.returncode, proc.stdout + proc.stderr


def first_failure(output):
    m = re.search(r"^FAILED (\S+)", output, re.M)
    return m.group(1) if m else ""


def run_mutant(mutant, workdir, timeout):
    tree = copy_tree(os.path.join(workdir, mutant.name))
    t = time.time()
    try:
        apply(mutant, tree)
    except ValueError as e:
        return mutant, "NOT APPLIED", str(e), 0.0
    rc, out = run_pytest(tree, mutant.tests, timeout)
    seconds = time.time() - t
    shutil.rmtree(tree, ignore_errors=True)
    if rc == 1 and first_failure(out):
        return mutant, "killed", first_failure(out), seconds
    if rc == 0:
        return mutant, "SURVIVED", "", seconds
    status = "TIMEOUT" if rc is None else f"ERROR (pytest exit {rc})"
    return mutant, status, out.strip().splitlines()[-1] if out.strip() else "", seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2, help="mutants run at once (default 2)")
    p.add_argument("--only", help="comma-separated mutant names")
    p.add_argument("--timeout", type=int, default=900, help="seconds per pytest run")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = p.parse_args(argv)
    mutants = MUTANTS
    if args.only:
        names = args.only.split(",")
        unknown = set(names) - {m.name for m in MUTANTS}
        if unknown:
            p.error(f"unknown mutants {sorted(unknown)}; --list shows them")
        mutants = [m for m in MUTANTS if m.name in names]
    if args.list:
        for m in mutants:
            print(f"{m.name:28s} {m.path}: {m.what}\n{'':28s} tests: {' '.join(m.tests)}")
        return 0

    with tempfile.TemporaryDirectory(prefix="ssd_r34_mutants_") as workdir:
        # The killing tests must pass on the unpatched code, else a "kill" means nothing.
        base = copy_tree(os.path.join(workdir, "unpatched"))
        for files in sorted({m.tests[0] for m in mutants}):
            ks = list(dict.fromkeys(m.tests[2] for m in mutants if m.tests[0] == files))
            t = time.time()
            rc, out = run_pytest(base, [files, "-k", " or ".join(f"({k})" for k in ks)],
                                 args.timeout)
            print(f"unpatched: {files} ({' or '.join(ks)}): pytest exit {rc} in "
                  f"{time.time() - t:.0f} s", flush=True)
            if rc != 0:
                print(out[-3000:])
                print("The killing tests fail on the unpatched code: fix that first.")
                return 2
        shutil.rmtree(base, ignore_errors=True)

        results = []
        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = [pool.submit(run_mutant, m, workdir, args.timeout) for m in mutants]
            for f in concurrent.futures.as_completed(futures):
                m, status, detail, seconds = f.result()
                print(f"  {m.name}: {status} ({seconds:.0f} s)", flush=True)
                results.append((m, status, detail))
    order = {m.name: i for i, m in enumerate(mutants)}
    results.sort(key=lambda r: order[r[0].name])
    width = max(len(m.name) for m in mutants)
    print(f"\n{'mutant':{width}s}  {'result':10s}  killing test")
    for m, status, detail in results:
        print(f"{m.name:{width}s}  {status:10s}  {detail}")
    survived = [m.name for m, status, _ in results if status != "killed"]
    print(f"\n{len(results) - len(survived)} of {len(results)} mutants killed" +
          (f"; not killed: {', '.join(survived)}" if survived else "."))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
