"""Inference end to end at 1200x1200 (strides 3 3 2 2 2 2), batch 1 and 4.

uint8 images to detections at 480x640: ssd_r34's speed options on and off against the
reference's forward and decode, same weights and images (docs/speed.md, "What is compared").
"""
import torch

from _common import (bf16_rows, compare_detections, compare_loosely, make_cfg, normalized, parse,
                     parser, random_images, random_model, report, time_interleaved)
from baseline import reference_inference, reference_model
from detectron2.modeling import build_model

from ssd_r34.export import attach_backend

CONFIG = "configs/ssd_r34_1200.yaml"
ORIGINAL = (480, 640)
DEFAULTS = "ssd_r34 (defaults: channels-last, BN folded, oneDNN post-ops)"


def detector(model, inputs):
    """A callable that runs ``model`` on ``inputs`` under no_grad and returns the Instances."""
    def f():
        with torch.no_grad():
            return [o["instances"] for o in model(inputs)]
    return f


@torch.no_grad()
def calibrate_scores(model, x, candidates=11000):
    """Shift the conf heads' class biases until about ``candidates`` (box, class) scores per
    image of ``x`` pass 0.05, spread evenly over the 80 classes, as a trained model's
    (docs/speed.md, "What is compared")."""
    K = model.num_classes
    conf = model.forward_network(x)[1]

    def counts(shift):
        return ((conf + shift).softmax(-1)[..., :K] > 0.05).sum((0, 1)).float() / len(x)

    # Multiplicative steps of every class's shift at once (the background stays at 0);
    # the classes share the softmax, so the steps shrink to settle the coupling.
    shift = torch.zeros(K + 1)
    for step in [0.2] * 60 + [0.05] * 60:
        shift[:K] += step * torch.log((candidates / K + 1) / (counts(shift) + 1))
    for conv in model.head.conf:
        conv.bias.view(-1, K + 1).add_(shift)


def benchmark_model():
    """The 1200x1200 model of the inference benchmarks (``random_model``, heads scaled on one
    random image of seed 100, class biases shifted by :func:`calibrate_scores`), eval mode."""
    cfg = make_cfg(CONFIG)
    sample = random_images(1, cfg.INPUT.FIXED_SIZE, seed=100)[0]
    model = random_model(cfg, sample)
    calibrate_scores(model, normalized(model, sample))
    return model


def variant(model, *opts):
    """A CONFIG model with ``opts`` and ``model``'s weights, in eval mode, its engine attached
    (MODEL.SSD.INFERENCE_BACKEND)."""
    cfg = make_cfg(CONFIG, *opts)
    m = build_model(cfg)
    m.load_state_dict(model.state_dict())
    return attach_backend(m, cfg)


def main(argv=None):
    p = parser(__doc__.splitlines()[0], repeats=5)
    p.add_argument("--batches", default="1,4")
    p.add_argument("--repeats-large", type=int, default=3, help="rounds at batch 4")
    args = parse(p, argv)
    ours = benchmark_model()
    H, W = ours.input_size
    plain = variant(ours, "MODEL.SSD.CHANNELS_LAST", "False",
                    "MODEL.SSD.FUSE_BN_INFERENCE", "False")
    no_post_ops = variant(ours, "MODEL.SSD.ONEDNN_POST_OPS", "False")
    bf16 = variant(ours, "MODEL.SSD.INFERENCE_DTYPE", "bfloat16")
    ref, dboxes = reference_model(ours, (3, 3, 2, 2, 2, 2), (H, W))
    ref.eval()
    results = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        images, inputs = random_images(batch, (H, W), seed=batch, original=ORIGINAL)

        def baseline():
            return reference_inference(ref, images, dboxes, [ORIGINAL] * batch)

        out_ours, out_base = detector(ours, inputs)(), baseline()
        with torch.no_grad():
            conf = ours.forward_network(normalized(ours, images))[1]
        per_class = (conf.softmax(-1)[..., :-1] > 0.05).sum((0, 1)).float() / batch
        fns = {"baseline (reference forward + decode)": baseline, DEFAULTS: detector(ours, inputs)}
        if batch == 1:
            fns["ssd_r34, defaults but ONEDNN_POST_OPS False"] = detector(no_post_ops, inputs)
            fns["ssd_r34, every speed option off"] = detector(plain, inputs)
        if bf16_rows(args):
            fns["ssd_r34, INFERENCE_DTYPE bfloat16 (opt-in)"] = detector(bf16, inputs)
            bf16_note = ("bfloat16 vs fp32 ssd_r34: "
                         f"{compare_loosely(detector(bf16, inputs)(), out_ours)}.")
        else:
            bf16_note = ("bfloat16 row not timed: --bf16 off, or no bf16 instructions on this "
                         "CPU (emulated, slow); --bf16 on forces it.")
        times = time_interleaved(fns, args.repeats if batch == 1 else args.repeats_large)
        results[batch] = report(
            f"Inference end to end: {H}x{W}, batch {batch} (per image)", times,
            next(iter(fns)), target=(DEFAULTS, 1.5), per=batch,
            notes=[f"{per_class.sum():.0f} (box, class) scores above 0.05 per image, in "
                   f"{int((per_class > 0).sum())} classes (median {per_class.median():.0f} a "
                   "class).",
                   f"Same weights, same images, fp32: {compare_detections(out_ours, out_base)}.",
                   bf16_note],
            json_path=args.json, key=f"inference_batch{batch}")
    return results


if __name__ == "__main__":
    main()
