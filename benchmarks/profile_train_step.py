"""Where the training step's time goes (README "Why the training step misses 1.2x").

Two tables, not part of ``make bench``:

1. ``torch.profiler`` on one training step of bench_train_step.py (300x300, batch 8), the
   baseline, ssd_r34 without the sparse head backward and ssd_r34 with the defaults: time in
   oneDNN convolutions (forward and backward), in the sparse head backward, and the rest.
2. Every convolution shape of that model at batch 8, forward and backward, in NCHW and in
   channels-last (NHWC), interleaved rounds, median: what channels-last can gain in training.

    python benchmarks/profile_train_step.py [--repeats 5]
"""
import statistics

import torch
import torch.nn.functional as F
from torch.profiler import profile

from _common import environment, make_cfg, parse, parser, time_interleaved
from bench_train_step import BASELINE, BATCH, DEFAULTS, DENSE_HEAD, SIZE, build_steps
from detectron2.modeling import build_model

CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward")
SPARSE_BACKWARD = "_Conv2dSparseGradBackward"


def profile_step(fn):
    """(seconds in oneDNN convolutions, forward + backward; seconds in the sparse head
    backward, ssd_r34/sparse_grad.py, with everything it calls; seconds in all ops) of one
    call. (Where the sparse backward falls back to the dense one, that convolution is
    counted in both of the first two.)"""
    fn()  # warm-up
    with profile() as prof:
        fn()
    events = prof.key_averages()
    conv = sum(e.self_cpu_time_total for e in events if e.key in CONV_OPS)
    sparse = sum(e.cpu_time_total for e in events if e.key == SPARSE_BACKWARD)
    return conv / 1e6, sparse / 1e6, sum(e.self_cpu_time_total for e in events) / 1e6


def conv_shapes():
    """[(name, input shape, weight shape, stride, padding)] of the 300x300 model's
    convolutions at batch BATCH, one per distinct shape."""
    model = build_model(make_cfg("configs/ssd_r34_300.yaml", "MODEL.SSD.CHANNELS_LAST",
                                 "False")).train()
    seen, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            def hook(conv, inputs, _out, name=name):
                key = (tuple(inputs[0].shape), tuple(conv.weight.shape), conv.stride,
                       conv.padding)
                seen.setdefault(key, name)
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model.forward_network(torch.zeros(BATCH, 3, SIZE, SIZE))
    for h in hooks:
        h.remove()
    return [(name, *key) for key, name in seen.items()]


def layout_step(x_shape, w_shape, stride, padding, memory_format, needs_input_grad):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, generator=g).contiguous(memory_format=memory_format)
    w = torch.randn(w_shape, generator=g).contiguous(memory_format=memory_format)
    x.requires_grad_(needs_input_grad)
    w.requires_grad_()
    grad = torch.randn_like(F.conv2d(x.detach(), w.detach(), None, stride, padding))

    def run():
        F.conv2d(x, w, None, stride, padding).backward(grad)
    return run


def main(argv=None):
    args = parse(parser(__doc__.splitlines()[0], repeats=5), argv)
    fns = build_steps()
    print(f"\n### One training step, {SIZE}x{SIZE} batch {BATCH}: torch.profiler\n")
    print(f"{environment()}.\n")
    print("| implementation | all ops (s) | convolutions, fwd + bwd (s) | share "
          "| sparse head backward (s) | the rest (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in (BASELINE, DENSE_HEAD, DEFAULTS):
        conv, sparse, total = profile_step(fns[name])
        print(f"| {name} | {total:.2f} | {conv:.2f} | {conv / total:.0%} | {sparse:.2f} | "
              f"{total - conv - sparse:.2f} |")

    print(f"\n### Convolution forward + backward at batch {BATCH}: NCHW against channels-last"
          f" (median of {args.repeats} interleaved rounds)\n")
    print("| first module | input | weight | stride | NCHW (ms) | NHWC (ms) | NCHW / NHWC |")
    print("|---|---|---|---|---:|---:|---:|")
    sums = [0.0, 0.0]
    for name, x_shape, w_shape, stride, padding in conv_shapes():
        needs_input_grad = not name.endswith("stem.conv1")  # the image needs no gradient
        layouts = {fmt: layout_step(x_shape, w_shape, stride, padding, fmt, needs_input_grad)
                   for fmt in (torch.contiguous_format, torch.channels_last)}
        times = time_interleaved(layouts, args.repeats)
        nchw, nhwc = (statistics.median(times[f]) * 1e3 for f in layouts)
        sums[0] += nchw
        sums[1] += nhwc
        print(f"| {name} | {'x'.join(map(str, x_shape))} | {'x'.join(map(str, w_shape))} | "
              f"{stride[0]} | {nchw:.1f} | {nhwc:.1f} | {nchw / nhwc:.2f} |")
    print(f"| all distinct shapes, once each | | | | {sums[0]:.1f} | {sums[1]:.1f} | "
          f"{sums[0] / sums[1]:.2f} |")


if __name__ == "__main__":
    main()
