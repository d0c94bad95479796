#!/usr/bin/env python
"""One command that checks every GPU path of ssd_r34 and measures it (docs/gpu.md).

    python3 benchmarks/gpu_check.py --wheels wheels/gpu --output-dir $OUT   # on a CUDA machine
    python3 benchmarks/gpu_check.py --dry-run    # anywhere: the plan, the table's shape, the JSON
    python3 benchmarks/gpu_check.py --smoke      # on CPU: every phase, tiny sizes

Each phase runs in its own process with a time budget; only they import torch.
"""
import argparse
import gc
import glob
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback

from _common import ROOT, md_table

SCHEMA = "ssd_r34.gpu_check/1"
# (name, budget in seconds). setup + phases = 340 s: under 8 minutes with the start-up.
SETUP_BUDGET = 45
PHASES = [("cuda_tests", 150), ("inference_speed", 70), ("training_speed", 75)]
PHASE_NAMES = [n for n, _ in PHASES]
TOTAL_BUDGET = SETUP_BUDGET + sum(b for _, b in PHASES)
# Published figures beside which ours are printed (other hardware, other software).
ANCHORS = [
    {"kind": "inference", "images_per_s": 990,
     "what": "MLPerf Inference ssd-resnet34 (1200x1200) Offline, NVIDIA A100, TensorRT INT8, "
             "per GPU (about)",
     "source": "MLPerf Inference closed-division results, "
               "github.com/mlcommons/inference_results_v1.1"},
    {"kind": "training", "images_per_s": 724,
     "what": "NVIDIA SSD300 v1.1 (ResNet-50 backbone) training, 1x A100, AMP (about)",
     "source": "github.com/NVIDIA/DeepLearningExamples PyTorch/Detection/SSD/README.md"},
]
# Sizes of the two profiles: "gpu" (the real check) and "smoke" (CPU, tiny, for tests).
TINY = ["INPUT.FIXED_SIZE", "(64, 64)", "MODEL.SSD.STRIDES", "[1, 1, 1, 1, 1, 1]"]
PROFILES = {
    "gpu": {
        "model": ("configs/ssd_r34_1200.yaml", [], 1200),  # of inference_speed
        "inference_speed": {"batches": [1, 8, 32], "dtypes": ["float32", "bfloat16", "float16"],
                            "min_time": 1.0},
        "training_speed": {"runs": [("configs/ssd_r34_300.yaml", [], 300, 32, 512),
                                    ("configs/ssd_r34_1200.yaml", [], 1200, 4, 128)],
                           "dtype": "float16", "min_time": 2.0},
    },
    "smoke": {
        "model": ("configs/ssd_r34_300.yaml", TINY, 64),
        # float32 only: bfloat16 autocast is slow on CPUs without bf16 units
        "inference_speed": {"batches": [1, 2], "dtypes": ["float32"], "min_time": 0.2},
        "training_speed": {"runs": [("configs/ssd_r34_300.yaml", TINY, 64, 2, 2)],
                           "dtype": "float32", "min_time": 0.2},
    },
}
# Same for every profile (with _common.make_cfg's BN): no C++ Winograd build for CPU models.
COMMON_OPTS = ["MODEL.SSD.WINOGRAD", "False"]


# ---- arguments ------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="run nothing: print the plan and the table's shape, write the JSON")
    mode.add_argument("--smoke", action="store_true",
                      help="run every phase on CPU at tiny sizes (checks this script)")
    p.add_argument("--phases", default=",".join(PHASE_NAMES),
                   help=f"comma-separated subset of {','.join(PHASE_NAMES)} (default: all)")
    p.add_argument("--budget", type=float, default=TOTAL_BUDGET,
                   help=f"seconds for setup and all phases (default {TOTAL_BUDGET}); "
                        "each phase's budget is scaled by budget / default")
    p.add_argument("--wheels", default=None,
                   help="folder of `make gpu-wheels`: install them offline into "
                        "WORK_DIR/site first (the GPU machines have no network)")
    p.add_argument("--output-dir", default=os.path.join(ROOT, "output", "gpu_check"),
                   help="gpu_check.json, gpu_check.md and logs/ go here")
    p.add_argument("--work-dir", default=os.path.join(ROOT, "output", "gpu_check_work"),
                   help="installed wheels, data set, training runs (large files)")
    # internal: one phase in a child process
    p.add_argument("--run-phase", choices=PHASE_NAMES + ["environment"], help=argparse.SUPPRESS)
    p.add_argument("--profile", default="gpu", choices=sorted(PROFILES), help=argparse.SUPPRESS)
    p.add_argument("--phase-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    names = [n.strip() for n in args.phases.split(",") if n.strip()]
    unknown = [n for n in names if n not in PHASE_NAMES]
    if unknown or not names:
        p.error(f"--phases: unknown phase(s) {unknown or '(none given)'}; choose from "
                f"{','.join(PHASE_NAMES)}")
    args.phases = [n for n in PHASE_NAMES if n in names]  # run order is fixed
    if not (args.budget > 0 and math.isfinite(args.budget)):
        p.error(f"--budget must be a positive number of seconds, got {args.budget}")
    if (args.wheels is not None and not args.dry_run and args.run_phase is None
            and not glob.glob(os.path.join(args.wheels, "*.whl"))):
        p.error(f"--wheels {args.wheels}: no wheels there. Run `make gpu-wheels` on a machine "
                "with network and carry the folder to the GPU machine (docs/gpu.md).")
    return args


def budgets(args):
    """Phase -> seconds, scaled to --budget."""
    scale = args.budget / TOTAL_BUDGET
    return {"setup": SETUP_BUDGET * scale, **{n: b * scale for n, b in PHASES if n in args.phases}}


# ---- results, table -------------------------------------------------------------------
def empty_results(args, mode):
    """The JSON document ("gpu", "smoke" or "dry-run") with every phase "not run" and the
    throughput rows of its profile without figures."""
    b = budgets(args)
    inference, training = planned_rows("smoke" if mode == "smoke" else "gpu")
    return {
        "schema": SCHEMA, "mode": mode,
        "command": "benchmarks/gpu_check.py " + " ".join(sys.argv[1:]),
        "budget_s": round(args.budget, 1),
        "environment": {"python": platform.python_version()},
        "phases": {name: {"status": "not run", "seconds": None, "budget_s": round(b[name], 1),
                          "checks": [], "error": None}
                   for name in ["setup"] + list(args.phases)},
        "cuda_tests": [], "inference": inference, "training": training, "anchors": ANCHORS,
        "summary": {"passed": 0, "failed": 0, "skipped": 0, "not run": len(b)},
    }


def planned_rows(profile):
    """The throughput rows a run fills in (figures None): (inference, training)."""
    p = PROFILES[profile]
    inf = p["inference_speed"]
    rows = [{"size": p["model"][2], "batch": b, "dtype": d, "channels_last": True,
             "network_images_per_s": None, "end_to_end_images_per_s": None, "status": "not run"}
            for d in inf["dtypes"] for b in inf["batches"]]
    tr = [{"size": size, "batch": None, "dtype": p["training_speed"]["dtype"],
           "channels_last": True, "images_per_s": None, "peak_memory_gib": None,
           "status": "not run"} for _, _, size, _, _ in p["training_speed"]["runs"]]
    return rows, tr


def summarize(results):
    counts = {"passed": 0, "failed": 0, "skipped": 0, "not run": 0}
    for ph in results["phases"].values():
        status = "failed" if ph["status"] == "timeout" else ph["status"]
        counts[status if status in counts else "not run"] += 1
    results["summary"] = counts
    return counts


def _fmt(x, digits=0):
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def render_table(results):
    """Markdown: phases, CUDA tests, inference and training throughput, anchors."""
    lines = ["## ssd_r34 GPU check (" + results["mode"] + ")", ""]
    env = results.get("environment", {})
    if env.get("device_name") or env.get("torch"):
        lines += [", ".join(f"{k} {env[k]}" for k in ("device_name", "torch", "cuda", "cudnn",
                                                      "python") if env.get(k)), ""]
    lines.append(md_table(["phase", "status", "seconds", "budget s", "checks passed", "note"], [
        [name, ph["status"], _fmt(ph.get("seconds"), 1), _fmt(ph.get("budget_s"), 0),
         f"{sum(1 for c in ph.get('checks', []) if c.get('passed'))}/{len(ph.get('checks', []))}",
         (ph.get("error") or "").split("\n")[0][:70]] for name, ph in results["phases"].items()]))
    if results["cuda_tests"]:
        lines += ["", md_table(["test marked cuda", "outcome"],
                               [[t["test"], t["outcome"]] for t in results["cuda_tests"]])]
    lines += ["", "Inference, channels-last, images/s (random weights)", "", md_table(
        ["size", "batch", "dtype", "network", "end to end", "status"],
        [[r["size"], r["batch"], r["dtype"], _fmt(r["network_images_per_s"]),
          _fmt(r["end_to_end_images_per_s"]), r["status"]] for r in results["inference"]])]
    lines += ["", "Training step, AMP, images/s (largest batch that fits)", "", md_table(
        ["size", "batch", "dtype", "images/s", "peak GiB", "status"],
        [[r["size"], _fmt(r["batch"]), r["dtype"], _fmt(r["images_per_s"]),
          _fmt(r["peak_memory_gib"], 1), r["status"]] for r in results["training"]])]
    lines += ["", "Published anchors (other hardware and software):", ""]
    lines += [f"- {a['kind']}: ~{a['images_per_s']} images/s, {a['what']} ({a['source']})"
              for a in results["anchors"]]
    s = results["summary"]
    lines += ["", f"phases: {s['passed']} passed, {s['failed']} failed, {s['skipped']} skipped, "
                  f"{s['not run']} not run"]
    return "\n".join(lines)


def write_outputs(results, output_dir):
    os.makedirs(output_dir, exist_ok=True)
    summarize(results)
    table = render_table(results)
    tmp = os.path.join(output_dir, "gpu_check.json.tmp")
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1, default=str)
    os.replace(tmp, os.path.join(output_dir, "gpu_check.json"))
    with open(os.path.join(output_dir, "gpu_check.md"), "w") as f:
        f.write(table + "\n")
    return table


# ---- the parent: set-up, then each phase in a child process ---------------------------
def child_env(args, site):
    env = dict(os.environ, PYTHONUNBUFFERED=os.environ.get("PYTHONUNBUFFERED", "1"))
    paths = [site, ROOT, env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.setdefault("SSD_R34_DATASETS", os.path.join(args.work_dir, "datasets"))
    return env


def install_wheels(wheels, site, log):
    """pip install --no-index --no-deps --target SITE: every wheel of the folder, and
    Detectron2's (tagged cp310, pure Python for ssd_r34's use) with the tag flags."""
    stamp = os.path.join(site, ".gpu_check_wheels")
    names = sorted(os.path.basename(w) for w in glob.glob(os.path.join(wheels, "*.whl")))
    if os.path.exists(stamp) and open(stamp).read() == "\n".join(names):
        log.write("wheels already installed\n")
        return
    shutil.rmtree(site, ignore_errors=True)
    pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-index",
           "--no-deps", "--target", site]
    d2 = [n for n in names if n.startswith("sal_detectron2")]
    others = [os.path.join(wheels, n) for n in names if n not in d2]
    cmds = [pip + others] if others else []
    if d2:
        cmds.append(pip + ["--find-links", wheels, "--python-version", "3.10",
                           "--implementation", "cp", "--only-binary=:all:", "sal-detectron2"])
    if subprocess.run([sys.executable, "-m", "pip", "--version"],
                      capture_output=True).returncode == 0:
        for cmd in cmds:
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=120)
    else:  # a wheel is a zip of the files to put on the path
        import zipfile

        log.write(f"{sys.executable} has no pip: unpacking the wheels into {site}\n")
        for n in names:
            with zipfile.ZipFile(os.path.join(wheels, n)) as z:
                z.extractall(site)
    with open(stamp, "w") as f:
        f.write("\n".join(names))


def run_child(args, phase, budget, env, log_path):
    """Run one phase in a child process; returns its result dict (or a failure record)."""
    out = os.path.join(args.work_dir, f"phase_{phase}.json")
    if os.path.exists(out):
        os.remove(out)
    cmd = [sys.executable, os.path.abspath(__file__), "--run-phase", phase, "--profile",
           "smoke" if args.smoke else "gpu", "--phase-out", out, "--deadline",
           str(time.time() + budget), "--work-dir", args.work_dir]
    t0, status, error = time.time(), None, None
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=budget + 5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the phase and anything it started
            proc.wait()
            rc, status = None, "timeout"
            error = f"ran past its budget of {budget:.0f} s and was stopped"
    result = json.load(open(out)) if os.path.exists(out) else {}
    if status is None and rc != 0 and result.get("status") in (None, "passed", "running"):
        status, error = "failed", f"exit status {rc}"
    result["status"] = status or result.get("status", "failed")
    if error:
        result["error"] = (result.get("error") or "") + error
    result["seconds"] = round(time.time() - t0, 1)
    return result


def print_phase(name, ph, log_path):
    print(f"[gpu_check] {name}: {ph['status'].upper()} ({_fmt(ph.get('seconds'), 1)} s)")
    for c in ph.get("checks", []):
        print(f"    {'PASS' if c.get('passed') else 'FAIL'} {c['name']}"
              + (f": {c['detail']}" if c.get("detail") not in (None, "") else ""))
    if ph.get("error"):
        print("    error: " + ph["error"].strip().splitlines()[-1][:300])
    if ph["status"] not in ("passed", "skipped") and log_path and os.path.exists(log_path):
        last = "".join(open(log_path, errors="replace").readlines()[-25:])
        print("    ---- last lines of " + log_path + "\n" + last)


def run_all(args):
    sys.stdout.reconfigure(line_buffering=True)  # each phase's lines as soon as it ends
    profile = "smoke" if args.smoke else "gpu"
    results, b = empty_results(args, profile), budgets(args)
    logs = os.path.join(args.output_dir, "logs")
    os.makedirs(logs, exist_ok=True)
    os.makedirs(args.work_dir, exist_ok=True)
    start = time.time()
    # setup: wheels, then the environment (a child: the first import of torch and CUDA)
    site = os.path.join(args.work_dir, "site") if args.wheels else None
    setup, env = results["phases"]["setup"], child_env(args, site)
    try:
        with open(os.path.join(logs, "setup.log"), "w") as log:
            if args.wheels:
                install_wheels(args.wheels, site, log)
        r = run_child(args, "environment", max(b["setup"] - (time.time() - start), 30), env,
                      os.path.join(logs, "environment.log"))
        results["environment"].update(r.get("environment", {}))
        setup.update(checks=r.get("checks", []), status=r["status"], error=r.get("error"))
    except Exception as e:  # noqa: BLE001  recorded; the phases say what follows from it
        setup["status"], setup["error"] = "failed", f"{type(e).__name__}: {e}"
    setup["seconds"] = round(time.time() - start, 1)
    print_phase("setup", setup, os.path.join(logs, "setup.log"))
    # Phases are skipped only when torch said there is no GPU (not when set-up failed
    # before asking: the phases then record their own errors).
    no_cuda = profile == "gpu" and results["environment"].get("cuda_available") is False
    for name in args.phases:
        ph = results["phases"][name]
        if no_cuda:
            ph["status"] = "skipped"
            ph["error"] = "no CUDA device (torch.cuda.is_available() is False); --smoke runs on CPU"
            print_phase(name, ph, None)
            continue
        log_path = os.path.join(logs, f"{name}.log")
        r = run_child(args, name, b[name], env, log_path)
        for key in ("cuda_tests", "inference", "training"):
            if key in r:
                results[key] = r.pop(key)
        ph.update({k: v for k, v in r.items() if k in ph})
        print_phase(name, ph, log_path)
        write_outputs(results, args.output_dir)  # a later kill keeps what is done
    results["total_seconds"] = round(time.time() - start, 1)
    print("\n" + write_outputs(results, args.output_dir))
    print(f"\nwritten: {os.path.join(args.output_dir, 'gpu_check.json')}, gpu_check.md, logs/ "
          f"({results['total_seconds']:.0f} s in all)")
    return 0 if results["summary"]["failed"] == 0 and not no_cuda else 1


def dry_run(args):
    b = budgets(args)
    print("[gpu_check] dry run: nothing is executed. Plan (phase, budget s):")
    for name, seconds in [*b.items(), ("total", sum(b.values()))]:
        print(f"    {name:16s} {seconds:6.0f}")
    print("\n" + write_outputs(empty_results(args, "dry-run"), args.output_dir))
    print(f"\nwritten: {os.path.join(args.output_dir, 'gpu_check.json')}")
    return 0


# ---- phases (child processes) ---------------------------------------------------------
class Phase:
    """What a child fills in and writes to --phase-out after every change."""

    def __init__(self, args):
        self.path, self.work_dir = args.phase_out, args.work_dir
        self.deadline = args.deadline or (time.time() + 3600)
        self.profile, self.profile_name = PROFILES[args.profile], args.profile
        self.device = "cuda" if args.profile == "gpu" else "cpu"
        self.data = {"status": "running", "checks": [], "error": None}

    def left(self):
        return self.deadline - time.time()

    def check(self, name, passed, detail=None):
        self.data["checks"].append({"name": name, "passed": bool(passed), "detail": detail})
        print(f"{'PASS' if passed else 'FAIL'} {name}: {detail}")
        self.save()

    def save(self):
        if self.path:
            with open(self.path + ".tmp", "w") as f:
                json.dump(self.data, f, default=str)
            os.replace(self.path + ".tmp", self.path)


def _torch():
    import torch

    torch.backends.cudnn.benchmark = True
    return torch


def _cfg(config, *opts, device="cpu"):
    from _common import make_cfg

    return make_cfg(config, *COMMON_OPTS, *opts, device=device)


def phase_environment(ph, args):
    import numpy
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
           "cudnn": torch.backends.cudnn.is_available() and torch.backends.cudnn.version() or None,
           "numpy": numpy.__version__}
    for mod in ("torchvision", "detectron2", "fvcore", "pycocotools", "ssd_r34"):
        try:
            m = __import__(mod)
            env[mod] = m.__version__ if mod == "torchvision" else os.path.dirname(m.__file__)
        except Exception as e:  # noqa: BLE001
            env[mod] = f"import failed: {type(e).__name__}: {e}"
    ph.data["environment"] = env
    ph.save()
    if env["cuda_available"]:
        p = torch.cuda.get_device_properties(0)
        env.update(device_name=p.name, gpu_memory_gib=round(p.total_memory / 2 ** 30, 1),
                   device_count=torch.cuda.device_count(), capability=f"{p.major}.{p.minor}",
                   bf16_supported=torch.cuda.is_bf16_supported())
        try:
            env["nccl"] = str(torch.cuda.nccl.version())
        except Exception as e:  # noqa: BLE001  a detail, not a reason to stop
            env["nccl"] = f"unknown ({type(e).__name__})"
    ph.check("ssd_r34 and Detectron2 import",
             not str(env["ssd_r34"]).startswith("import failed")
             and not str(env["detectron2"]).startswith("import failed"),
             f"detectron2 from {env['detectron2']}")
    if ph.profile_name == "gpu":
        ph.check("a CUDA device", env["cuda_available"], env.get("device_name"))


def phase_cuda_tests(ph, args):
    files = sorted(f for f in glob.glob(os.path.join(ROOT, "tests", "*", "test_*.py"))
                   if "mark.cuda" in open(f).read())
    cmd = [sys.executable, "-m", "pytest", "-v", "-rfE", "-m", "cuda", "-p", "no:cacheprovider",
           *[os.path.relpath(f, ROOT) for f in files]]
    print("$ " + " ".join(cmd))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              timeout=max(ph.left() - 5, 5))
        out, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = e.stdout or "", None
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
    print(out)
    tests = ph.data["cuda_tests"] = parse_pytest(out)
    summary = next((line.strip("= ") for line in reversed(out.splitlines())
                    if re.search(r"\d+ (passed|failed|skipped|error)", line)), "no summary")
    outcomes = [t["outcome"] for t in tests]
    if ph.profile_name == "gpu":
        ph.check("tests marked cuda pass", rc == 0 and "PASSED" in outcomes
                 and not {"FAILED", "ERROR"} & set(outcomes), summary)
    else:  # no GPU: every one of them must be skipped, none may fail
        ph.check("tests marked cuda are skipped without a GPU",
                 rc == 0 and outcomes and set(outcomes) == {"SKIPPED"}, summary)


def parse_pytest(out):
    """[{test, outcome}] from pytest -v's lines ("NODEID PASSED  [ 14%]"), or else from the
    -rA short summary (PASSED / FAILED / ERROR NODEID, SKIPPED [count] FILE:LINE: reason)."""
    verbose = re.findall(r"^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b", out, re.M)
    if verbose:
        return [{"test": t, "outcome": o} for t, o in verbose]
    tests = []
    for line in out.splitlines():
        m = re.match(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS) (\S+)", line)
        if m:
            tests.append({"test": m.group(2), "outcome": m.group(1)})
            continue
        m = re.match(r"^SKIPPED \[(\d+)\] (\S+?):\d+: (.*)$", line)
        if m:
            tests.extend({"test": f"{m.group(2)} ({m.group(3)[:60]})", "outcome": "SKIPPED"}
                         for _ in range(int(m.group(1))))
    return tests


def _time_loop(torch, device, fn, min_time, min_iters=3, max_iters=50, warmup=2):
    """Seconds per call of ``fn``: at least ``min_iters`` calls and ``min_time`` seconds."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    n, t0 = 0, time.perf_counter()
    while n < min_iters or (time.perf_counter() - t0 < min_time and n < max_iters):
        fn()
        n += 1
    sync()
    return (time.perf_counter() - t0) / n


def _measure_rows(ph, key, rows, measure, min_left):
    """``measure(row)`` for each row of the phase's ``key`` list while ``min_left`` seconds are
    left; a failure is recorded in its row and the next one runs."""
    torch = _torch()
    ph.data[key] = rows
    for row in rows:
        if ph.left() < min_left:
            row["status"] = "skipped: time budget"
            continue
        try:
            measure(row)
            row["status"] = "ok"
            print(f"{key} {row}")
        except Exception as e:  # noqa: BLE001  recorded, next configuration
            row["status"] = f"failed: {type(e).__name__}: {str(e)[:200]}"
            traceback.print_exc()
        finally:
            gc.collect()
            if ph.device == "cuda":
                torch.cuda.empty_cache()
        ph.save()
    done = sum(r["status"] == "ok" for r in rows)
    return done == len(rows), f"{done} of {len(rows)}"


def phase_inference_speed(ph, args):
    from _common import normalized, random_images, random_model

    from ssd_r34.modeling.meta_arch import INFERENCE_DTYPES

    torch, p, device = _torch(), ph.profile["inference_speed"], ph.device
    config, opts, size = ph.profile["model"]
    size = (size, size)
    cfg = _cfg(config, *opts, device=device)
    model = random_model(cfg, random_images(1, size, seed=1)[0], bn_seed=1)

    def measure(row):
        # the folded inference copy is rebuilt for the new dtype (its cache key holds it)
        model.inference_dtype = INFERENCE_DTYPES[row["dtype"]]
        n = row["batch"]
        images, inputs = random_images(n, size, seed=1, device=device)
        x = normalized(model, images)
        with torch.no_grad():
            t_net = _time_loop(torch, device, lambda: model.forward_network(x), p["min_time"] / 2)
            t_e2e = _time_loop(torch, device, lambda: model(inputs), p["min_time"] / 2)
        row.update(network_images_per_s=round(n / t_net, 1),
                   end_to_end_images_per_s=round(n / t_e2e, 1))

    ph.check("every inference configuration measured",
             *_measure_rows(ph, "inference", planned_rows(args.profile)[0], measure, 8))


def _train_step_runner(torch, cfg, batch_size, size, device):
    """A trainer of build_step_trainer (AMPTrainer on CUDA) fed one batch over and over."""
    import itertools

    from _common import synthetic_batch
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from ssd_r34.engine import SSDTrainer
    from ssd_r34.engine.train_loop import build_step_trainer

    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = synthetic_batch((size, size), batch_size, cfg.MODEL.SSD.NUM_CLASSES, seed=5)
    batch = [{**b, "image": b["image"].to(device)} for b in batch]
    trainer = build_step_trainer(cfg, model, itertools.repeat(batch),
                                 SSDTrainer.build_optimizer(cfg, model))
    storage = EventStorage(0)

    def step():
        with storage:
            trainer.iter = storage.iter
            trainer.run_step()
            storage.step()
    return trainer, step


def phase_training_speed(ph, args):
    torch, p, device = _torch(), ph.profile["training_speed"], ph.device
    cuda = device == "cuda"
    runs = {size: (config, opts, probe, cap) for config, opts, size, probe, cap in p["runs"]}
    amp = p["dtype"] != "float32"  # float32: SimpleTrainer, no AMP

    def measure(row):
        config, opts, probe, cap = runs[row["size"]]
        cfg = _cfg(config, *opts, "SOLVER.AMP.ENABLED", str(amp), "SOLVER.AMP.DTYPE",
                   p["dtype"] if amp else "float16", device=device)
        size, batch = row["size"], probe
        if cuda:  # memory of the probe batch -> the largest that should fit
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            step = _train_step_runner(torch, cfg, probe, size, device)[1]
            step()
            step()
            per_image = (torch.cuda.max_memory_allocated() - base) / probe
            fit = int(0.8 * (torch.cuda.get_device_properties(0).total_memory - base)
                      / max(per_image, 1))
            batch = max(probe, min(cap, 2 ** int(math.log2(max(fit, 1)))))
            step = None
            gc.collect()
            torch.cuda.empty_cache()
            print(f"training {size}: {per_image / 2 ** 20:.0f} MiB per image -> batch {batch}")
        while True:
            try:
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                trainer, step = _train_step_runner(torch, cfg, batch, size, device)
                t = _time_loop(torch, device, step, p["min_time"], min_iters=3, max_iters=30)
                break
            except torch.cuda.OutOfMemoryError:
                if batch <= probe:
                    raise
            # out of memory: outside the except block, whose traceback held the activations
            trainer = step = None
            gc.collect()
            torch.cuda.empty_cache()
            batch //= 2
            print(f"out of memory: trying batch {batch}")
        row.update(batch=batch, images_per_s=round(batch / t, 1), trainer=type(trainer).__name__)
        if cuda:
            row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 1)

    ph.check("every training size measured",
             *_measure_rows(ph, "training", planned_rows(args.profile)[1], measure, 10))


def run_phase(args):
    ph = Phase(args)
    ph.save()
    try:
        globals()["phase_" + args.run_phase](ph, args)  # phase_environment, ...
        checks = ph.data["checks"]
        ph.data["status"] = "passed" if checks and all(c["passed"] for c in checks) else "failed"
    except Exception as e:  # noqa: BLE001  the parent records it and goes on
        traceback.print_exc()
        ph.data["status"] = "failed"
        ph.data["error"] = f"{type(e).__name__}: {e}"
    ph.save()
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.run_phase:
        return run_phase(args)
    return dry_run(args) if args.dry_run else run_all(args)


if __name__ == "__main__":
    sys.exit(main())
