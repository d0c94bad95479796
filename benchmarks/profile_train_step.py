"""Where the training step's time goes (docs/speed.md, "Where the training step's time goes").

    python benchmarks/profile_train_step.py [--repeats 5]

``torch.profiler`` on bench_train_step.py's steps, and every convolution shape of that model
forward and backward in NCHW, channels-last and Winograd. Not part of ``make bench``.
"""
import statistics

import torch
import torch.nn.functional as F
from torch.profiler import profile

from _common import environment, make_cfg, md_table, parse, parser, time_interleaved
from bench_train_step import BASELINE, BATCH, DEFAULTS, DENSE_HEAD, DIRECT_CONV, SIZE, build_steps
from detectron2.modeling import build_model
from ssd_r34.layers import WinogradConv2d
from ssd_r34.layers.winograd import conv3x3_winograd, winograd_available

CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward")
SPARSE_BACKWARD = "_Conv2dSparseGradBackward"
WINOGRAD = ("_Conv3x3Winograd", "_Conv3x3WinogradBackward")


def profile_once(fn):
    """Seconds of one call: (all ops, oneDNN convolutions fwd + bwd, Winograd convolutions fwd +
    bwd, the sparse head backward of ssd_r34/layers/sparse_grad.py; the last two with all they
    call; where the sparse backward falls back to the dense one, it is counted in both)."""
    with profile() as prof:
        fn()
    events = prof.key_averages()
    conv = sum(e.self_cpu_time_total for e in events if e.key in CONV_OPS)
    winograd = sum(e.cpu_time_total for e in events if e.key in WINOGRAD)
    sparse = sum(e.cpu_time_total for e in events if e.key == SPARSE_BACKWARD)
    total = sum(e.self_cpu_time_total for e in events)
    return total / 1e6, conv / 1e6, winograd / 1e6, sparse / 1e6


def profile_steps(fns, rounds=3):
    """name -> ``profile_once`` of the round with the median total, over ``rounds``
    interleaved rounds (``time_interleaved``'s; its warm-up round left out)."""
    runs = {name: [] for name in fns}
    time_interleaved({n: lambda n=n: runs[n].append(profile_once(fns[n])) for n in fns}, rounds)
    return {name: sorted(r[1:])[rounds // 2] for name, r in runs.items()}


def conv_shapes():
    """[(name, input shape, weight shape, stride, padding, Winograd)] of the 300x300 model's
    convolutions at batch BATCH, one per distinct shape; Winograd is "used" where
    MODEL.SSD.WINOGRAD runs the convolution, "not used" for the backbone's other 3x3 stride-1
    convolutions (too few channels to gain, ssd_r34/layers/winograd.py), else None."""
    model = build_model(make_cfg("configs/ssd_r34_300.yaml", "MODEL.SSD.CHANNELS_LAST",
                                 "False")).train()
    seen, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            def hook(conv, inputs, _out, name=name):
                if isinstance(conv, WinogradConv2d):
                    winograd = "used"
                elif (name.startswith("backbone.res") and conv.kernel_size == (3, 3)
                      and conv.stride == (1, 1) and conv.padding == (1, 1)):
                    winograd = "not used"
                else:
                    winograd = None
                key = (tuple(inputs[0].shape), tuple(conv.weight.shape), conv.stride,
                       conv.padding, winograd if winograd_available() else None)
                seen.setdefault(key, name)
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model.forward_network(torch.zeros(BATCH, 3, SIZE, SIZE))
    for h in hooks:
        h.remove()
    return [(name, *key) for key, name in seen.items()]


def layout_step(x_shape, w_shape, stride, padding, memory_format, needs_input_grad,
                winograd=False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, generator=g).contiguous(memory_format=memory_format)
    w = torch.randn(w_shape, generator=g).contiguous(memory_format=memory_format)
    x.requires_grad_(needs_input_grad)
    w.requires_grad_()
    grad = torch.randn_like(F.conv2d(x.detach(), w.detach(), None, stride, padding))

    def run():
        y = conv3x3_winograd(x, w) if winograd else F.conv2d(x, w, None, stride, padding)
        y.backward(grad)
    return run


def main(argv=None):
    args = parse(parser(__doc__.splitlines()[0], repeats=5), argv)
    fns = build_steps()
    print(f"\n### One training step, {SIZE}x{SIZE} batch {BATCH}: torch.profiler\n")
    print(f"{environment()}.\n")
    profiled = profile_steps({name: fns[name]
                              for name in (BASELINE, DIRECT_CONV, DENSE_HEAD, DEFAULTS)})
    print(md_table(["implementation", "all ops (s)", "oneDNN convolutions, fwd + bwd (s)",
                    "Winograd convolutions, fwd + bwd (s)", "sparse head backward (s)",
                    "the rest (s)"],
                   [[name, *(f"{t:.2f}" for t in (total, conv, winograd, sparse,
                                                  total - conv - winograd - sparse))]
                    for name, (total, conv, winograd, sparse) in profiled.items()], "lrrrrr"))
    print(f"\n### Convolution forward + backward at batch {BATCH}: NCHW, channels-last and "
          f"Winograd (median of {args.repeats} interleaved rounds)\n")
    rows, sums = [], [0.0, 0.0, 0.0]
    for name, x_shape, w_shape, stride, padding, winograd in conv_shapes():
        needs_input_grad = not name.endswith("stem.conv1")  # the image needs no gradient
        steps = {fmt: layout_step(x_shape, w_shape, stride, padding, fmt, needs_input_grad)
                 for fmt in (torch.contiguous_format, torch.channels_last)}
        if winograd:
            steps["winograd"] = layout_step(x_shape, w_shape, stride, padding,
                                            torch.channels_last, needs_input_grad, True)
        times = {k: statistics.median(v) * 1e3
                 for k, v in time_interleaved(steps, args.repeats).items()}
        nchw, nhwc = times[torch.contiguous_format], times[torch.channels_last]
        wino = times.get("winograd", nhwc)
        for i, t in enumerate((nchw, nhwc, wino if winograd == "used" else nhwc)):
            sums[i] += t  # the Winograd sum: the defaults, Winograd where it is used
        wino_cells = ["", ""] if not winograd else [
            f"{wino:.1f}{' (not used)' if winograd == 'not used' else ''}", f"{nhwc / wino:.2f}"]
        rows.append([name, "x".join(map(str, x_shape)), "x".join(map(str, w_shape)), stride[0],
                     f"{nchw:.1f}", f"{nhwc:.1f}", f"{nchw / nhwc:.2f}", *wino_cells])
    rows.append(["all distinct shapes, once each (Winograd column: the defaults)", "", "", "",
                 f"{sums[0]:.1f}", f"{sums[1]:.1f}", f"{sums[0] / sums[1]:.2f}",
                 f"{sums[2]:.1f}", f"{sums[1] / sums[2]:.2f}"])
    print(md_table(["first module", "input", "weight", "stride", "NCHW (ms)", "NHWC (ms)",
                    "NCHW / NHWC", "Winograd (ms)", "NHWC / Winograd"], rows, "llllrrrrr"))


if __name__ == "__main__":
    main()
