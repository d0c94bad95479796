"""Plot a training run's metrics.json: loss terms, learning rate and box AP over iterations
(docs/tools.md)."""
import argparse
import json
import os
import sys

LOSSES = ("loss_box_reg", "loss_cls", "total_loss")
APS = ("bbox/AP", "bbox/AP50", "bbox/AP75")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("path", metavar="OUTPUT_DIR", help="a training OUTPUT_DIR or its metrics.json")
    p.add_argument("--output", metavar="PNG", help="default: metrics.png next to metrics.json")
    p.add_argument("--title", help="figure title (default: the folder name)")
    return p


def load_metrics(path):
    """metrics.json -> {key: [(iteration, value), ...]} sorted by iteration; the last value
    logged for an iteration wins (a resumed run appends)."""
    series = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            try:
                row = json.loads(line) if line.strip() else {}
            except json.JSONDecodeError:
                print(f"{path}:{n}: not JSON, skipped", file=sys.stderr)
                continue
            it = row.get("iteration")
            for k, v in row.items() if it is not None else ():
                if k != "iteration" and isinstance(v, (int, float)):
                    series.setdefault(k, {})[int(it)] = float(v)
    return {k: sorted(v.items()) for k, v in series.items()}


def plot(series, out_path, title=""):
    """Three panels (losses, lr, AP) into the PNG ``out_path``. Returns ``out_path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    last_it = max(its[-1][0] for its in series.values() if its)
    panels = (("training loss", LOSSES, "no loss in metrics.json"), ("learning rate", ("lr",), ""),
              ("box AP (DATASETS.TEST)", APS,
               "no evaluation in metrics.json\n(TEST.EVAL_PERIOD > 0 logs AP)"))
    for ax, (name, keys, missing) in zip(axes, panels):
        keys = [k for k in keys if series.get(k)]
        for k in keys:
            ax.plot(*zip(*series[k]), label=k, marker="o", markersize=3)
        if keys and missing:  # a legend, except for the one lr curve
            ax.legend()
        elif missing:
            ax.text(0.5, 0.5, missing, ha="center", va="center", transform=ax.transAxes)
        ax.set_title(name)
        ax.set_xlabel("iteration")
        ax.set_xlim(left=0, right=max(last_it * 1.03, 1))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    losses = [v for k in LOSSES for _, v in series.get(k, []) if v > 0]
    if losses and max(losses) / min(losses) > 20:
        axes[0].set_yscale("log")
    if series.get("lr"):
        axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    axes[2].set_ylabel("%")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def main(argv=None):
    """Returns: {"png": path, "series": load_metrics's result}."""
    args = get_parser().parse_args(argv)
    path = args.path
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.json")
    if not os.path.exists(path):
        raise SystemExit(f"{path} does not exist: give a training OUTPUT_DIR or its metrics.json")
    series = load_metrics(path)
    if not series:
        raise SystemExit(f"{path} has no metrics.")
    out = args.output or os.path.join(os.path.dirname(path), "metrics.png")
    plot(series, out, os.path.basename(os.path.dirname(os.path.abspath(path)))
         if args.title is None else args.title)
    last = {k: v[-1] for k, v in series.items() if k in LOSSES + APS + ("lr",)}
    print(f"Wrote {out}; last values: " + ", ".join(
        f"{k} {v:.4g} (iter {i})" for k, (i, v) in sorted(last.items())))
    return {"png": out, "series": series}
