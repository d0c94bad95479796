"""Training step at 300x300, batch 8: forward, matching, loss, backward (no optimiser step).

ssd_r34 from uint8 images (defaults, each speed option off) against the reference's forward,
loss and backward from pre-encoded targets; same weights, losses checked (docs/speed.md).
"""
import torch

from _common import bf16_rows, make_cfg, parse, parser, report, time_interleaved
from baseline import (IMAGENET_MEAN, IMAGENET_STD, reference_encode, reference_model,
                      reference_train_step)
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

SIZE = 300
BATCH = 8


def make_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    images, gts = [], []
    for _ in range(BATCH):
        images.append(torch.randint(0, 256, (3, SIZE, SIZE), generator=g, dtype=torch.uint8))
        n = int(torch.randint(1, 12, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * (SIZE - 40)
        wh = torch.rand(n, 2, generator=g) * 150 + 8
        boxes = torch.cat([xy, (xy + wh).clamp(max=SIZE)], 1)
        gts.append((boxes, torch.randint(0, 80, (n,), generator=g)))
    return images, gts


BASELINE = "baseline (reference fwd + double-sort loss + bwd; targets pre-encoded)"
DEFAULTS = "ssd_r34 (defaults: channels-last, sparse head backward, Winograd)"
DENSE_HEAD = "ssd_r34, MODEL.SSD.SPARSE_HEAD_BACKWARD False"
DIRECT_CONV = "ssd_r34, MODEL.SSD.WINOGRAD False"
CONTIGUOUS = "ssd_r34, MODEL.SSD.CHANNELS_LAST False"
BF16 = "ssd_r34 + bf16 autocast (SOLVER.AMP, opt-in, not exact)"


def build_steps():
    """The timed implementations (name -> callable returning the loss), same weights and
    batch; also used by profile_train_step.py. The first is the baseline."""
    torch.manual_seed(0)
    ours = build_model(make_cfg("configs/ssd_r34_300.yaml")).train()

    def variant(*opts):  # ours with these config overrides, same weights
        model = build_model(make_cfg("configs/ssd_r34_300.yaml", *opts)).train()
        model.load_state_dict(ours.state_dict())
        return model

    ref, dboxes = reference_model(ours, (1, 1, 2, 2, 2, 1), SIZE)

    images, gts = make_batch()
    batched = [{"image": img, "instances": Instances((SIZE, SIZE), gt_boxes=Boxes(b),
                                                      gt_classes=c)}
               for img, (b, c) in zip(images, gts)]
    # The reference's loader output: normalised images, targets encoded per image.
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    x = (torch.stack(images).float() / 255 - mean) / std

    def encode_all():
        enc = [reference_encode(b / SIZE, c + 1, dboxes) for b, c in gts]
        return (torch.stack([e[0] for e in enc]).transpose(1, 2).contiguous(),
                torch.stack([e[1] for e in enc]))

    gloc, glabel = encode_all()

    def step(model, autocast=False):
        def run():
            model.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                losses = model(batched)
            loss = sum(losses.values())
            loss.backward()
            return loss.detach()
        run.model = model
        return run

    return {
        BASELINE: lambda: reference_train_step(ref, x, gloc, glabel, dboxes),
        "baseline + per-image encode of the batch":
            lambda: reference_train_step(ref, x, *encode_all(), dboxes),
        DEFAULTS: step(ours),
        DENSE_HEAD: step(variant("MODEL.SSD.SPARSE_HEAD_BACKWARD", "False")),
        DIRECT_CONV: step(variant("MODEL.SSD.WINOGRAD", "False")),
        CONTIGUOUS: step(variant("MODEL.SSD.CHANNELS_LAST", "False")),
        BF16: step(ours, autocast=True),
    }


def active_fractions(step):
    """Per level, the fraction of the classifier's output locations (image, y, x) that get a
    nonzero gradient in one run of ``step`` (what the sparse head backward visits)."""
    fractions = {}

    def hook(_module, _inputs, outputs):
        for i, conf in enumerate(outputs[1]):
            conf.register_hook(lambda g, i=i: fractions.__setitem__(
                i, float((g != 0).any(dim=1).float().mean())))
    handle = step.model.head.register_forward_hook(hook)
    try:
        step()
    finally:
        handle.remove()
    return [fractions[i] for i in sorted(fractions)]


def main(argv=None):
    args = parse(parser(__doc__.splitlines()[0], repeats=5), argv)
    fns = build_steps()
    loss_ours, loss_ref = fns[DEFAULTS]().item(), fns[BASELINE]().item()
    loss_plain = fns[CONTIGUOUS]().item()
    loss_direct = fns[DIRECT_CONV]().item()
    if not bf16_rows(args):
        del fns[BF16]
    bf16_note = (f"bf16 autocast: {fns[BF16]().item():.4f}" if BF16 in fns else
                 "bf16 row not timed: --bf16 off, or no bf16 instructions on this CPU; --bf16 on "
                 "forces it")
    active = active_fractions(fns[DEFAULTS])  # (the bf16 row ran on the defaults' model)
    fns[DENSE_HEAD]()
    grads = [(a.grad, b.grad) for a, b in zip(fns[DEFAULTS].model.parameters(),
                                               fns[DENSE_HEAD].model.parameters())]
    grad_diff = max(float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))
                    for a, b in grads)
    times = time_interleaved(fns, args.repeats)
    return report(
        f"Training step: {SIZE}x{SIZE}, batch {BATCH} (forward, matching, loss, backward)",
        times, BASELINE, target=(DEFAULTS, 1.2),
        notes=[f"Same weights, same batch: loss ssd_r34 {loss_ours:.6f} (direct convolutions "
               f"{loss_direct:.6f}, contiguous {loss_plain:.6f}), baseline {loss_ref:.6f}; "
               f"relative difference "
               f"{abs(loss_ours - loss_ref) / abs(loss_ref):.1e} ({bf16_note}).",
               f"Sparse against dense head backward: every parameter's gradient within "
               f"{grad_diff:.1e} of its largest magnitude. Classifier locations with a nonzero "
               f"gradient, per level: {', '.join(f'{a:.1%}' for a in active)}.",
               "ssd_r34's step includes normalising the uint8 images and matching; the "
               "first baseline row gets normalised images and encoded targets for free."],
        json_path=args.json, key="train_step")


if __name__ == "__main__":
    main()
