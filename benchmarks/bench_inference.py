"""Inference end to end at 1200x1200 (strides 3 3 2 2 2 2, 15130 boxes), batch 1 and 4.

From resized uint8 images to detections in the original image's pixels (480x640 here).
ssd_r34: ``model(batched_inputs)`` in eval mode under ``torch.no_grad()`` with the default
options (channels-last, BatchNorm folded into the convolutions, ReLU and residual additions as
oneDNN post-ops), then (batch 1) the same without the post-ops and with every speed option
off, and with ``MODEL.SSD.INFERENCE_DTYPE bfloat16`` (opt-in, not exact).
Baseline: ToTensor + Normalize, ``ReferenceSSDR34`` forward, ``reference_decode`` (per-class
loop, greedy Python NMS), scaling. Same weights (random, with BatchNorm statistics that are
not the identity, heads scaled to a trained model's logit range and the class biases shifted
until about 11000 (box, class) scores per image pass 0.05, spread over the 80 classes as in
bench_postprocess), same images.
"""
import torch

from _common import (bf16_rows, compare_detections, compare_loosely, make_cfg, parse, parser,
                     report, time_interleaved)
from baseline import (ReferenceSSDR34, copy_weights_to_reference, reference_default_boxes,
                      reference_inference)
from reference_impl import randomise_batchnorm, scale_heads  # reference/: see baseline
from detectron2.modeling import build_model

CONFIG = "configs/ssd_r34_1200.yaml"
ORIGINAL = (480, 640)
DEFAULTS = "ssd_r34 (defaults: channels-last, BN folded, oneDNN post-ops)"


def batch_inputs(batch, size):
    """``batch`` random uint8 images of ``size`` (H, W), seeded by ``batch``, and the model's
    inputs for them (original image ORIGINAL). Returns (images (B, 3, H, W), inputs)."""
    g = torch.Generator().manual_seed(batch)
    images = torch.randint(0, 256, (batch, 3, *size), generator=g, dtype=torch.uint8)
    return images, [{"image": img, "height": ORIGINAL[0], "width": ORIGINAL[1]}
                    for img in images]


def detector(model, inputs):
    """A callable that runs ``model`` on ``inputs`` under no_grad and returns the Instances."""
    def f():
        with torch.no_grad():
            return [o["instances"] for o in model(inputs)]
    return f


def calibrate_scores(model, x, candidates=11000):
    """Shift the conf heads' class biases until about ``candidates`` (box, class) scores per
    image pass 0.05, spread evenly over the 80 classes, as in bench_postprocess. A trained
    model calls most boxes background and its candidates fall in many classes. Random heads
    put several classes above 0.05 on most boxes, all in a few classes; raising the
    background alone leaves them there, which makes the reference's per-class decoding far
    cheaper than with the same number spread over the classes. Returns the candidates of
    each class on ``x`` (per image)."""
    K = model.num_classes
    target = candidates / K
    with torch.no_grad():
        conf = model.forward_network(x)[1]

        def counts(shift):
            return ((conf + shift).softmax(-1)[..., :K] > 0.05).sum((0, 1)).float() / len(x)

        # Multiplicative steps of every class's shift at once (the background stays at 0);
        # the classes share the softmax, so the steps shrink to settle the coupling.
        shift = torch.zeros(K + 1)
        for step in [0.2] * 60 + [0.05] * 60:
            shift[:K] += step * torch.log((target + 1) / (counts(shift) + 1))
        for conv in model.head.conf:
            conv.bias.view(-1, K + 1).add_(shift)
        return counts(shift)


def benchmark_model():
    """The 1200x1200 model of the inference benchmarks, in eval mode: random weights (seed 0),
    randomised BatchNorm statistics, heads scaled to a trained model's logit range and class
    biases shifted by :func:`calibrate_scores`, all measured on one random image (seed 100)."""
    torch.manual_seed(0)
    model = build_model(make_cfg(CONFIG)).eval()
    randomise_batchnorm(model)
    g = torch.Generator().manual_seed(100)
    sample = torch.randint(0, 256, (1, 3, *model.input_size), generator=g, dtype=torch.uint8)
    sample = (sample.float() - model.pixel_mean) / model.pixel_std
    scale_heads(model, sample)
    calibrate_scores(model, sample)
    return model


def main(argv=None):
    p = parser(__doc__.splitlines()[0], repeats=5)
    p.add_argument("--batches", default="1,4")
    p.add_argument("--repeats-large", type=int, default=3, help="rounds at batch 4")
    args = parse(p, argv)
    ours = benchmark_model()
    H, W = ours.input_size
    plain = build_model(make_cfg(CONFIG, "MODEL.SSD.CHANNELS_LAST", "False",
                                 "MODEL.SSD.FUSE_BN_INFERENCE", "False")).eval()
    plain.load_state_dict(ours.state_dict())
    no_post_ops = build_model(make_cfg(CONFIG, "MODEL.SSD.ONEDNN_POST_OPS", "False")).eval()
    no_post_ops.load_state_dict(ours.state_dict())
    bf16 = build_model(make_cfg(CONFIG, "MODEL.SSD.INFERENCE_DTYPE", "bfloat16")).eval()
    bf16.load_state_dict(ours.state_dict())
    ref = ReferenceSSDR34(81, (3, 3, 2, 2, 2, 2)).eval()
    copy_weights_to_reference(ours, ref)
    dboxes = reference_default_boxes((H, W), ref.head_output_sizes((H, W)))

    results = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        images, inputs = batch_inputs(batch, (H, W))

        def run(model):
            return detector(model, inputs)

        def baseline():
            return reference_inference(ref, images, dboxes, [ORIGINAL] * batch)

        out_ours, out_base = run(ours)(), baseline()
        with torch.no_grad():
            x = (images.float() - ours.pixel_mean) / ours.pixel_std
            conf = ours.forward_network(x)[1]
        per_class = (conf.softmax(-1)[..., :-1] > 0.05).sum((0, 1)).float() / batch
        fns = {"baseline (reference forward + decode)": baseline, DEFAULTS: run(ours)}
        if batch == 1:
            fns["ssd_r34, defaults but ONEDNN_POST_OPS False"] = run(no_post_ops)
            fns["ssd_r34, every speed option off"] = run(plain)
        if bf16_rows(args):
            fns["ssd_r34, INFERENCE_DTYPE bfloat16 (opt-in)"] = run(bf16)
            bf16_note = f"bfloat16 vs fp32 ssd_r34: {compare_loosely(run(bf16)(), out_ours)}."
        else:
            bf16_note = ("bfloat16 row not timed: --bf16 off, or no bf16 instructions on this "
                         "CPU (emulated, slow); --bf16 on forces it.")
        repeats = args.repeats if batch == 1 else args.repeats_large
        times = time_interleaved(fns, repeats)
        results[batch] = report(
            f"Inference end to end: {H}x{W}, batch {batch} (per image)", times,
            next(iter(fns)), target=(DEFAULTS, 1.5),
            per=batch,
            notes=[f"{per_class.sum():.0f} (box, class) scores above 0.05 per image, in "
                   f"{int((per_class > 0).sum())} classes (median {per_class.median():.0f} a "
                   "class).",
                   f"Same weights, same images, fp32: {compare_detections(out_ours, out_base)}.",
                   bf16_note],
            json_path=args.json, key=f"inference_batch{batch}")
    return results


if __name__ == "__main__":
    main()
