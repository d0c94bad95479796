"""Postprocess (spec section 7) at 1200x1200: 15130 default boxes x 81 classes per image.

``SSD.inference`` + ``SSD.rescale`` against ``reference_decode`` + scaling on the same
predictions, shaped like a trained model's (docs/speed.md, "What is compared").
"""

import torch
from torchvision.ops import box_convert, box_iou

from _common import compare_detections, make_cfg, parse, parser, report, time_interleaved
from baseline import reference_postprocess
from detectron2.modeling import build_model

NUM_CLASSES = 81  # with background


def realistic_predictions(anchors, image_size, num_images, seed=0, objects=12, clutter=0.3):
    """(loc (N, R, 4) box deltas, probs (N, R, 81) with class 0 = background)."""
    g = torch.Generator().manual_seed(seed)
    H, W = image_size
    R = anchors.shape[0]
    acx, acy, aw, ah = box_convert(anchors, "xyxy", "cxcywh").unbind(1)
    locs, probs = [], []
    for _ in range(num_images):
        loc = torch.randn(R, 4, generator=g) * 0.3
        p = torch.rand(R, NUM_CLASSES, generator=g) * 0.002  # small residue everywhere
        # clutter: 1-4 classes between 0.05 and 0.3 on a share of the boxes
        noisy = torch.rand(R, generator=g) < clutter
        for _k in range(4):
            pick = noisy & (torch.rand(R, generator=g) < 0.6)
            cls = torch.randint(1, NUM_CLASSES, (R,), generator=g)
            val = 0.05 + 0.25 * torch.rand(R, generator=g)
            p[pick, cls[pick]] = val[pick]
        # objects: the boxes that overlap a ground truth fire for its class, confidently
        for _o in range(objects):
            w = W * (0.05 + 0.5 * torch.rand(1, generator=g).item())
            h = H * (0.05 + 0.5 * torch.rand(1, generator=g).item())
            x0 = (W - w) * torch.rand(1, generator=g).item()
            y0 = (H - h) * torch.rand(1, generator=g).item()
            hit = box_iou(anchors, torch.tensor([[x0, y0, x0 + w, y0 + h]]))[:, 0] > 0.3
            cls = int(torch.randint(1, NUM_CLASSES, (1,), generator=g))
            p[hit, cls] = 0.3 + 0.65 * torch.rand(int(hit.sum()), generator=g)
            # deltas that decode near the object, with some noise
            gx, gy = x0 + w / 2, y0 + h / 2
            t = torch.stack([10 * (gx - acx) / aw, 10 * (gy - acy) / ah,
                             5 * torch.log(w / aw), 5 * torch.log(h / ah)], 1)
            loc[hit] = t[hit] + 0.2 * torch.randn(int(hit.sum()), 4, generator=g)
        fg = p[:, 1:].sum(1).clamp(max=0.98)
        p[:, 0] = 1 - fg
        p = p / p.sum(1, keepdim=True)
        locs.append(loc)
        probs.append(p)
    return torch.stack(locs), torch.stack(probs)


def main(argv=None):
    args = parse(parser(__doc__.splitlines()[0], repeats=7), argv)
    cfg = make_cfg("configs/ssd_r34_1200.yaml")
    model = build_model(cfg).eval()
    H, W = model.input_size
    sizes = model.head_output_sizes()
    anchors = model.anchor_generator((H, W), sizes)
    R = anchors.shape[0]
    original = (480, 640)

    loc, probs = realistic_predictions(anchors, (H, W), num_images=1)
    logits = probs.log()
    # ssd_r34 layout: (N, R, 4) deltas, (N, R, 81) logits with background last.
    conf_ours = torch.cat([logits[..., 1:], logits[..., :1]], dim=2).contiguous()
    # reference layout: (N, 4, R), (N, 81, R) with background first; normalised xywh boxes.
    ploc = loc.transpose(1, 2).contiguous()
    plabel = logits.transpose(1, 2).contiguous()
    dboxes = box_convert(anchors / torch.tensor([W, H, W, H]), "xyxy", "cxcywh")

    def ours():
        with torch.no_grad():
            res = model.inference(loc, conf_ours, anchors, (H, W))
            return [model.rescale(r, *original) for r in res]

    def base():
        with torch.no_grad():
            return reference_postprocess(ploc, plabel, dboxes, [original])

    above = (probs[0, :, 1:] > 0.05).sum(0).float()
    agree = compare_detections(ours(), base())
    times = time_interleaved({"baseline (reference decode)": base, "ssd_r34": ours},
                             args.repeats)
    return report(
        f"Postprocess: {R} boxes x {NUM_CLASSES} classes, 1 image (1200x1200 model)", times,
        "baseline (reference decode)", target=("ssd_r34", 20.0),
        notes=[f"Inputs: per class, {above.median():.0f} boxes above 0.05 (median over the "
               f"80 classes; min {above.min():.0f}, max {above.max():.0f}).",
               f"Same inputs, same outputs: {agree}."],
        json_path=args.json, key="postprocess")


if __name__ == "__main__":
    main()
