"""Shared helpers of the benchmarks: paths, model set-up, interleaved timing, Markdown tables,
CPU flags. Imports torch only inside the functions that need it (gpu_check.py's parent
process runs on the standard library)."""
import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in (ROOT, os.path.join(ROOT, "reference")):  # reference/: reference_impl.py
    if p not in sys.path:
        sys.path.insert(0, p)


def make_cfg(config, *opts, device="cpu"):
    """The ssd_r34 config of ``config`` (a path under the repository root) with ``opts``; BN
    instead of SyncBN, so that nothing needs a process group."""
    from ssd_r34 import get_ssd_cfg

    cfg = get_ssd_cfg()
    cfg.merge_from_file(os.path.join(ROOT, config))
    cfg.merge_from_list(["MODEL.DEVICE", device, "MODEL.RESNETS.NORM", "BN", *opts])
    return cfg


def normalized(model, images):
    """uint8 images (N, 3, H, W) -> the model's normalised float32 input, on its device."""
    return (images.to(model.device).float() - model.pixel_mean) / model.pixel_std


def random_images(n, size, seed=0, original=None, device="cpu"):
    """``n`` random uint8 images (N, 3, H, W) of ``size`` (H, W) and the model's inputs for
    them on ``device``, detections rescaled to ``original`` (H, W; default ``size``)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, *size), generator=g, dtype=torch.uint8)
    h, w = original or size
    return images, [{"image": i.to(device), "height": h, "width": w} for i in images]


def random_model(cfg, images=None, bn_seed=0):
    """The eval-mode model of ``cfg`` with random weights (seed 0), randomised BatchNorm
    statistics and, given uint8 ``images`` (N, 3, H, W), heads scaled to a trained model's
    logit range on them (reference_impl's randomise_batchnorm and scale_heads)."""
    import torch
    from detectron2.modeling import build_model
    from reference_impl import randomise_batchnorm, scale_heads

    torch.manual_seed(0)
    model = build_model(cfg).eval()
    randomise_batchnorm(model, seed=bn_seed)
    if images is not None:
        scale_heads(model, normalized(model, images))
    return model


def synthetic_batch(size, batch, num_classes, seed=0):
    """``batch`` training inputs: random uint8 images of ``size`` (H, W), 1-5 random
    ground-truth boxes each (classes below ``num_classes``)."""
    import torch
    from detectron2.structures import Boxes, Instances

    H, W = size
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        n = int(torch.randint(1, 6, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * torch.tensor([W * 0.7, H * 0.7])
        wh = (torch.rand(n, 2, generator=g) * 0.4 + 0.05) * torch.tensor([W, H])
        boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([W, H]))], 1)
        image = torch.randint(0, 256, (3, H, W), generator=g, dtype=torch.uint8)
        classes = torch.randint(0, num_classes, (n,), generator=g)
        out.append({"image": image, "instances": Instances((H, W), gt_boxes=Boxes(boxes),
                                                           gt_classes=classes)})
    return out


def cpu_flags():
    """The vector-unit flags of /proc/cpuinfo that matter here (avx*, amx*, *vnni*, fma)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = [f for f in flags if f.startswith(("avx", "amx")) or "vnni" in f or f == "fma"]
    return " ".join(sorted(wanted)) or "none of avx/amx/vnni"


def bf16_rows(args):
    """Whether to time the CPU bfloat16 rows: ``--bf16 on``, or ``auto`` on a CPU with bf16
    instructions (avx512_bf16, amx_bf16); elsewhere bfloat16 is emulated and slow."""
    flags = cpu_flags().split()
    return args.bf16 == "on" or (args.bf16 == "auto" and
                                 any(f in flags for f in ("avx512_bf16", "amx_bf16")))


def parser(description, repeats):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="time the CPU bfloat16 rows: auto = where the CPU has bf16 "
                        "instructions (elsewhere they are emulated and slow)")
    p.add_argument("--repeats", type=int, default=repeats,
                   help="timed rounds; each round runs every implementation once, interleaved")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's, one per core); 1 is steadier "
                        "on a machine that other jobs keep busy")
    return p


def parse(p, argv=None):
    import torch

    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


class Times(dict):
    """name -> wall-clock seconds per round; ``.cpu``: name -> process CPU seconds per round
    (all threads; OpenMP workers that wait passively add nothing)."""

    def __init__(self, names):
        super().__init__((k, []) for k in names)
        self.cpu = {k: [] for k in names}


def time_interleaved(fns, repeats):
    """Run each callable of ``fns`` (name -> fn) once per round, in turn, ``repeats`` rounds
    after one untimed round. Returns a ``Times``."""
    times = Times(fns)
    for r in range(1 + repeats):
        for name, fn in fns.items():
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if r:
                times[name].append(dt)
                times.cpu[name].append(dc)
    return times


def environment():
    import torch

    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")


def md_table(header, rows, align=""):
    """A Markdown table (one string): ``header`` and ``rows`` (lists of cells); ``align``: a
    letter a column, "r" for right-aligned (numbers), anything else or none: left."""
    sep = "|" + "".join("---:|" if a == "r" else "---|" for a in align.ljust(len(header)))
    lines = ["| " + " | ".join(str(c) for c in row) + " |" for row in [header, *rows]]
    return "\n".join([lines[0], sep, *lines[1:]])


def report(title, times, baseline, target=None, per=1, notes=(), json_path=None, key=None):
    """Print one Markdown table: median and min wall-clock time per implementation, the
    speed-up of each over ``baseline`` (ratio of medians and ratio of mins), and the median
    process CPU time with its speed-up (steadier when other jobs share the cores). ``per``
    divides the times (e.g. per image). ``target``: (implementation, minimum speed-up),
    judged on the ratio of wall-clock medians. Returns the results (JSON, ``json_path``)."""
    base = times[baseline]
    bmed, bmin = statistics.median(base) / per, min(base) / per
    print(f"\n### {title}\n")
    print(f"{environment()}; {len(base)} interleaved rounds; 1-min load average at the end: "
          f"{os.getloadavg()[0]:.1f}.\n")
    bcpu = statistics.median(times.cpu[baseline]) / per
    summary, rows = {}, []
    for name, ts in times.items():
        med, mn = statistics.median(ts) / per, min(ts) / per
        c = statistics.median(times.cpu[name]) / per
        summary[name] = {"median_s": med, "min_s": mn, "speedup_median": bmed / med,
                         "speedup_min": bmin / mn, "samples_s": [t / per for t in ts],
                         "cpu_median_s": c, "speedup_cpu": bcpu / c}
        rows.append([name, f"{med * 1e3:.1f}", f"{mn * 1e3:.1f}", f"{bmed / med:.2f}x",
                     f"{bmin / mn:.2f}x", f"{c * 1e3:.1f}", f"{bcpu / c:.2f}x"])
    print(md_table(["implementation", "median (ms)", "min (ms)", "speed-up (median)",
                    "speed-up (min)", "CPU time, median (ms)", "speed-up (CPU)"], rows, "lrrrrrr"))
    for n in notes:
        print(f"\n{n}")
    result = {"title": title, "baseline": baseline, "rows": summary}
    if target is not None:
        name, minimum = target
        got, got_min, got_cpu = (summary[name][k] for k in ("speedup_median", "speedup_min",
                                                            "speedup_cpu"))
        ok = got >= minimum
        verdict = "MET" if ok else ("met on the minimums only" if got_min >= minimum
                                     else "NOT MET")
        print(f"\nTarget: {name} at least {minimum}x faster than {baseline}: "
              f"{got:.2f}x (median), {got_min:.2f}x (min), {got_cpu:.2f}x (CPU time) -> {verdict}")
        result["target"] = {"row": name, "minimum": minimum, "speedup_median": got, "met": ok,
                            "speedup_min": got_min, "speedup_cpu": got_cpu, "verdict": verdict}
    sys.stdout.flush()
    if json_path:
        data = json.load(open(json_path)) if os.path.exists(json_path) else {}
        data[key or title] = result
        with open(json_path, "w") as f:
            json.dump(data, f, indent=1)
    return result


def compare_detections(ours, baseline):
    """ssd_r34 ``Instances`` (classes 0..79) against the baseline's (boxes, labels 1..80,
    scores) per image: the same number, and each baseline detection paired with the closest
    ssd_r34 detection of its class. Returns a one-line summary with the largest differences."""
    n_ours, n_base = [len(r) for r in ours], [len(b[0]) for b in baseline]
    if n_ours != n_base:
        return f"detections per image: ssd_r34 {n_ours}, baseline {n_base} (DIFFER)"
    from ssd_r34.export import compare_detections as compare

    rs = [compare((boxes, scores, labels - 1), r) for r, (boxes, labels, scores) in
          zip(ours, baseline)]
    dscore, dbox = (max(r[k] for r in rs) for k in ("max_score_diff", "max_box_diff"))
    if not all(r["same_classes"] for r in rs):
        return f"detections per image: {n_ours} on both sides, classes DIFFER"
    return (f"detections per image: {n_ours} on both sides, paired by class; largest "
            f"difference: score {dscore:.2g}, box {dbox:.2g} px")


def compare_loosely(ours, other, iou=0.9):
    """How many of ``other``'s detections (Instances) ``ours`` reproduces: same class, box IoU
    >= ``iou`` (``reproduced_detections``). For a lower-precision path, where the lists cannot
    be identical. Returns a one-line summary."""
    from ssd_r34.export import reproduced_detections

    matched, total, dscore = reproduced_detections(ours, other, iou, score_difference=True)
    return (f"{matched}/{total} detections reproduced (same class, IoU >= {iou}), largest "
            f"score difference among them {dscore:.2g}")
