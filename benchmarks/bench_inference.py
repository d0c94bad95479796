"""Inference end to end at 1200x1200 (strides 3 3 2 2 2 2, 15130 boxes), batch 1 and 4.

From resized uint8 images to detections in the original image's pixels (480x640 here).
ssd_r34: ``model(batched_inputs)`` in eval mode under ``torch.no_grad()`` with the default
options (channels-last, BatchNorm folded into the convolutions), then the same with every
speed option off, and with ``MODEL.SSD.INFERENCE_DTYPE bfloat16`` (opt-in, not exact).
Baseline: ToTensor + Normalize, ``ReferenceSSDR34`` forward, ``reference_decode`` (per-class
loop, greedy Python NMS), scaling. Same weights (random, with BatchNorm statistics that are
not the identity, heads scaled to a trained model's logit range and the background bias
raised until about 11000 (box, class) scores pass 0.05 per image), same images.
"""
import torch

from _common import (compare_detections, compare_loosely, make_cfg, parse, parser, report,
                     time_interleaved)
from baseline import (ReferenceSSDR34, copy_weights_to_reference, reference_default_boxes,
                      reference_inference)
from reference_impl import randomise_batchnorm, scale_heads  # tests/ is on the path via baseline
from detectron2.modeling import build_model

CONFIG = "configs/ssd_r34_1200.yaml"
ORIGINAL = (480, 640)


def calibrate_background(model, x, candidates=11000):
    """Raise the background logit (the conf heads' background biases) until about
    ``candidates`` (box, class) scores per image pass 0.05, as in bench_postprocess: a
    trained model calls most boxes background (random heads give several classes above
    0.05 on almost every box)."""
    K = model.num_classes
    with torch.no_grad():
        conf = model.forward_network(x)[1]

        def count(delta):
            c = conf.clone()
            c[..., K] += delta
            return int((c.softmax(-1)[..., :K] > 0.05).sum()) / len(x)

        lo, hi = 0.0, 40.0
        for _ in range(30):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if count(mid) > candidates else (lo, mid)
        for conv in model.head.conf:
            conv.bias.view(-1, K + 1)[:, K] += hi


def main(argv=None):
    p = parser(__doc__.splitlines()[0], repeats=5)
    p.add_argument("--batches", default="1,4")
    p.add_argument("--repeats-large", type=int, default=3, help="rounds at batch 4")
    args = parse(p, argv)
    torch.manual_seed(0)
    ours = build_model(make_cfg(CONFIG)).eval()
    randomise_batchnorm(ours)
    H, W = ours.input_size
    g = torch.Generator().manual_seed(100)
    sample = torch.randint(0, 256, (1, 3, H, W), generator=g, dtype=torch.uint8)
    sample = (sample.float() - ours.pixel_mean) / ours.pixel_std
    scale_heads(ours, sample)
    calibrate_background(ours, sample)
    plain = build_model(make_cfg(CONFIG, "MODEL.SSD.CHANNELS_LAST", "False",
                                 "MODEL.SSD.FUSE_BN_INFERENCE", "False")).eval()
    plain.load_state_dict(ours.state_dict())
    bf16 = build_model(make_cfg(CONFIG, "MODEL.SSD.INFERENCE_DTYPE", "bfloat16")).eval()
    bf16.load_state_dict(ours.state_dict())
    ref = ReferenceSSDR34(81, (3, 3, 2, 2, 2, 2)).eval()
    copy_weights_to_reference(ours, ref)
    dboxes = reference_default_boxes((H, W), ref.head_output_sizes((H, W)))

    results = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        g = torch.Generator().manual_seed(batch)
        images = torch.randint(0, 256, (batch, 3, H, W), generator=g, dtype=torch.uint8)
        inputs = [{"image": img, "height": ORIGINAL[0], "width": ORIGINAL[1]} for img in images]

        def run(model):
            def f():
                with torch.no_grad():
                    return [o["instances"] for o in model(inputs)]
            return f

        def baseline():
            return reference_inference(ref, images, dboxes, [ORIGINAL] * batch)

        out_ours, out_base, out_bf16 = run(ours)(), baseline(), run(bf16)()
        with torch.no_grad():
            x = (images.float() - ours.pixel_mean) / ours.pixel_std
            conf = ours.forward_network(x)[1]
        candidates = (conf.softmax(-1)[..., :-1] > 0.05).sum().item() / batch
        fns = {"baseline (reference forward + decode)": baseline,
               "ssd_r34 (defaults: channels-last, BN folded)": run(ours)}
        if batch == 1:
            fns["ssd_r34, every speed option off"] = run(plain)
        fns["ssd_r34, INFERENCE_DTYPE bfloat16 (opt-in)"] = run(bf16)
        repeats = args.repeats if batch == 1 else args.repeats_large
        times = time_interleaved(fns, repeats)
        results[batch] = report(
            f"Inference end to end: {H}x{W}, batch {batch} (per image)", times,
            next(iter(fns)), target=("ssd_r34 (defaults: channels-last, BN folded)", 1.5),
            per=batch,
            notes=[f"{candidates:.0f} (box, class) scores above 0.05 per image.",
                   f"Same weights, same images, fp32: {compare_detections(out_ours, out_base)}.",
                   f"bfloat16 vs fp32 ssd_r34: {compare_loosely(out_bf16, out_ours)}."],
            json_path=args.json, key=f"inference_batch{batch}")
    return results


if __name__ == "__main__":
    main()
