"""The speed options keep the results: with every option that is on by default (channels-last,
BatchNorm folded at inference, oneDNN post-ops, sparse head backward, Winograd backbone
convolutions), and with the opt-in
bfloat16 inference, ssd_r34's detections, training loss and gradients match the plain float32
contiguous path. Also: the vectorised postprocess equals the reference's per-class loop, the
folded-BN copy follows weight changes, and the sparse head backward equals a dense convolution's
backward."""
import copy
import math

import pytest
import torch

import reference_impl as ref
from conftest import make_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, pairwise_iou
from ssd_r34.layers import fold_batch_norms
from ssd_r34.layers.onednn import FusedBasicBlock, FusedConv, FusedStem, onednn_fusion_available
from ssd_r34.layers.sparse_grad import DENSE_FRACTION, conv2d_sparse_grad
from ssd_r34.layers.winograd import winograd_available

SMALL = ["INPUT.FIXED_SIZE", "(128, 128)", "MODEL.SSD.STRIDES", "[1, 1, 2, 1, 1, 1]",
         "MODEL.RESNETS.NORM", "BN"]
PLAIN = ["MODEL.SSD.CHANNELS_LAST", "False", "MODEL.SSD.FUSE_BN_INFERENCE", "False",
         "MODEL.SSD.SPARSE_HEAD_BACKWARD", "False", "MODEL.SSD.WINOGRAD", "False"]
ORIG = (96, 160)  # the "original image" detections are scaled to


pytestmark = pytest.mark.usefixtures("one_thread")


def build(*opts):
    return build_model(make_cfg("configs/ssd_r34_300.yaml", *SMALL, *opts))


def make_plain():
    """Plain fp32 contiguous model with non-trivial BatchNorm statistics and a classifier
    scaled up so that many scores pass 0.05 (as trained weights do)."""
    torch.manual_seed(0)
    model = build(*PLAIN)
    ref.randomise_batchnorm(model, seed=1)
    with torch.no_grad():
        for conv in model.head.conf:
            conv.weight.mul_(3.0)
    return model.eval()


@pytest.fixture(scope="module")
def plain():
    return make_plain()


@pytest.fixture(scope="module")
def fast(plain):
    """The same weights with the default speed options."""
    return copy_of(plain)


def copy_of(plain, *opts):
    model = build(*opts)
    model.load_state_dict(plain.state_dict())
    return model.eval()


def images(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.randint(0, 256, (3, 128, 128), generator=g, dtype=torch.uint8),
             "height": ORIG[0], "width": ORIG[1]} for _ in range(n)]


def detect(model, inputs):
    with torch.no_grad():
        return [o["instances"] for o in model(inputs)]


def assert_same_detections(a, b, box_tol=1e-2, score_tol=1e-5):
    """Same number and classes; scores and boxes within tolerance. Sorting by (class, score)
    makes the comparison blind to the order of near-equal scores."""
    for x, y in zip(a, b):
        assert len(x) == len(y) > 50
        kx = sorted(range(len(x)), key=lambda i: (int(x.pred_classes[i]), -float(x.scores[i])))
        ky = sorted(range(len(y)), key=lambda i: (int(y.pred_classes[i]), -float(y.scores[i])))
        assert torch.equal(x.pred_classes[kx], y.pred_classes[ky])
        torch.testing.assert_close(x.scores[kx], y.scores[ky], atol=score_tol, rtol=0)
        torch.testing.assert_close(x.pred_boxes.tensor[kx], y.pred_boxes.tensor[ky],
                                   atol=box_tol, rtol=0)


def test_defaults_are_on_and_channels_last_reaches_the_network(fast):
    model = copy.deepcopy(fast)
    assert model.channels_last and model.fuse_bn_inference and model.inference_dtype is None
    assert model.backbone.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    seen = {}

    def record(module, inputs):
        seen["res2"] = inputs[0].is_contiguous(memory_format=torch.channels_last)

    model.backbone.res2[0].conv1.register_forward_pre_hook(record)
    x = torch.zeros(1, 3, 128, 128)  # a contiguous input is converted
    model.train()
    loc, conf, anchors = model.forward_network(x)
    assert seen["res2"] is True
    assert loc.shape == (1, anchors.shape[0], 4) and conf.shape == (1, anchors.shape[0], 81)


def test_default_options_match_plain_fp32_detections(plain, fast):
    inputs = images()
    with torch.no_grad():
        x = plain.preprocess_image(inputs).tensor
        a, b = plain.forward_network(x), fast.forward_network(x)
    for got, want in zip(b[:2], a[:2]):  # float32 rounding, relative to the outputs' scale
        torch.testing.assert_close(got, want, atol=1e-5 * want.abs().max().item(), rtol=0)
    assert fast._folded_backbone is not None  # the folded copy ran
    assert_same_detections(detect(fast, inputs), detect(plain, inputs))


def test_folded_copy_follows_weight_changes_and_stays_out_of_the_state_dict(plain, fast):
    fast, other = copy.deepcopy(fast), copy.deepcopy(plain)
    inputs = images(1, seed=3)
    detect(fast, inputs)
    folded = fast._folded_backbone[2]
    detect(fast, inputs)
    assert fast._folded_backbone[2] is folded  # cached while nothing changes
    assert set(fast.state_dict()) == set(plain.state_dict())
    with torch.no_grad():  # in place, as an optimiser step or load_state_dict does
        for m in (fast, other):
            m.backbone.res3[1].conv2.norm.running_var.mul_(1.5)
            m.backbone.stem.conv1.weight.mul_(0.9)
    assert_same_detections(detect(fast, inputs), detect(other, inputs))
    assert fast._folded_backbone[2] is not folded
    for m in (fast, other):  # a replaced tensor (same shape)
        w = m.backbone.res4[2].conv1.weight
        m.backbone.res4[2].conv1.weight = torch.nn.Parameter(w.detach() * 1.1)
        m.backbone.res4[2].conv1.norm.bias.data = m.backbone.res4[2].conv1.norm.bias.data + 0.1
    assert_same_detections(detect(fast, inputs), detect(other, inputs))
    # training drops the copy; with autograd on, the model's own backbone runs
    fast.train()
    assert fast._folded_backbone is None
    fast.eval()
    x = torch.zeros(1, 3, 128, 128, requires_grad=True)
    fast.forward_network(x)[1].sum().backward()
    assert fast._folded_backbone is None
    assert fast.backbone.stem.conv1.weight.grad is not None


def test_fold_batch_norms_is_exact_to_rounding(plain):
    import copy

    backbone = copy.deepcopy(plain.backbone).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        want = backbone(x)
        got = fold_batch_norms(backbone)(x)
    assert all(getattr(m, "norm", None) is None for m in backbone.modules()
               if isinstance(m, torch.nn.Conv2d))
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-5 * want[k].abs().max().item(),
                                   rtol=0)


@pytest.mark.skipif(not onednn_fusion_available(), reason="PyTorch built without oneDNN")
def test_cpu_inference_fuses_relu_and_residual_add_and_keeps_results(plain, fast):
    fast = copy.deepcopy(fast)
    inputs = images(1, seed=7)
    detect(fast, inputs)
    fused = fast._folded_backbone[2]
    kinds = [type(m) for m in fused.modules()]
    # res2..res4 (3 + 4 + 6 blocks), the stem, and the 10 ReLU convolutions of the extras.
    assert kinds.count(FusedBasicBlock) == 13 and kinds.count(FusedStem) == 1
    assert all(isinstance(getattr(fused, f"extra{i}").conv1, FusedConv)
               and isinstance(getattr(fused, f"extra{i}").conv2, FusedConv) for i in range(5))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    # Against the folded copy without post-op fusion: float32 rounding only.
    unfused = fold_batch_norms(copy.deepcopy(fast.backbone))
    x = torch.randn(2, 3, 128, 128).contiguous(memory_format=torch.channels_last)
    x0 = x.clone()
    with torch.no_grad():
        want, got = unfused(x), fused(x)
        block_in = torch.randn(1, 64, 32, 32).contiguous(memory_format=torch.channels_last)
        kept = block_in.clone()
        fused.res2[0](block_in)  # identity shortcut: the caller's tensor must survive
    assert torch.equal(x, x0) and torch.equal(block_in, kept)
    # Blocks after the first of a stage write into their input (the previous block's output).
    assert [b.input_is_private for b in fused.res2] == [False, True, True]
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-5 * want[k].abs().max().item(),
                                   rtol=0)
    # bfloat16 inference (autocast) keeps the plain modules: autocast cannot cast a fused op.
    bf16 = copy_of(plain, "MODEL.SSD.INFERENCE_DTYPE", "bfloat16")
    detect(bf16, inputs)
    assert not any(isinstance(m, FusedBasicBlock) for m in bf16._folded_backbone[2].modules())
    # Changing the inference dtype of a built model rebuilds the copy accordingly.
    fast.inference_dtype = torch.bfloat16
    detect(fast, inputs)
    assert not any(isinstance(m, FusedBasicBlock)
                   for m in fast._folded_backbone[2].modules())
    # MODEL.SSD.ONEDNN_POST_OPS False: folded, not fused.
    off = copy_of(plain, "MODEL.SSD.ONEDNN_POST_OPS", "False")
    detect(off, inputs)
    kinds = [type(m) for m in off._folded_backbone[2].modules()]
    assert FusedBasicBlock not in kinds and FusedConv not in kinds and FusedStem not in kinds


def grad_fn_names(t):
    """Names of the autograd nodes behind ``t``."""
    seen, todo = set(), [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo.extend(n for n, _ in node.next_functions)
    return {type(n).__name__ for n in seen}


def train_step(model):
    """Loss dict, autograd node names and parameter gradients of one training step."""
    batch = images(2, seed=5)
    batch[0]["instances"] = Instances((128, 128), gt_boxes=Boxes(torch.tensor(
        [[10., 20., 60., 90.], [70., 5., 120., 40.]])), gt_classes=torch.tensor([3, 17]))
    batch[1]["instances"] = Instances((128, 128), gt_boxes=Boxes(torch.tensor(
        [[30., 30., 100., 110.]])), gt_classes=torch.tensor([0]))
    model = copy.deepcopy(model).train()
    out = model(batch)
    total = sum(out.values())
    nodes = grad_fn_names(total)
    total.backward()
    return ({k: v.detach() for k, v in out.items()}, nodes,
            {k: p.grad for k, p in model.named_parameters()})


def test_training_loss_with_default_options_matches_plain(plain, fast):
    a, nodes, ga = train_step(fast)
    b, _, gb = train_step(plain)
    assert "_Conv2dSparseGradBackward" in nodes
    # (Without a C++ compiler the Winograd option warns and runs direct convolutions.)
    assert ("_Conv3x3WinogradBackward" in nodes) == winograd_available()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ga["head.conf.0.weight"], gb["head.conf.0.weight"], atol=1e-4,
                               rtol=1e-3)


def test_sparse_head_backward_keeps_every_gradient(fast):
    """MODEL.SSD.SPARSE_HEAD_BACKWARD on (the default) against off, all else equal: every
    parameter's gradient within 1e-4 of its largest magnitude. (Against the plain float32
    path the backbone's gradients of this small random network differ more, by up to a few
    percent: float32 itself is that far from float64 there, with or without the option.)"""
    dense = copy_of(fast, "MODEL.SSD.SPARSE_HEAD_BACKWARD", "False")
    a, nodes_sparse, ga = train_step(fast)
    b, nodes_dense, gb = train_step(dense)
    assert "_Conv2dSparseGradBackward" in nodes_sparse
    assert "_Conv2dSparseGradBackward" not in nodes_dense
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)  # the forward is unchanged
    assert sum(bool(gb[f"head.{k}.{i}.weight"].abs().max() > 0) for k in ("loc", "conf")
               for i in range(6)) >= 6  # the loss reaches several levels of both heads
    for name, want in gb.items():  # (zero where no box of a level was selected)
        torch.testing.assert_close(ga[name], want, atol=1e-4 * want.abs().max().item(),
                                   rtol=0, msg=lambda m, name=name: f"{name}: {m}")
    with torch.autocast("cpu", dtype=torch.bfloat16):  # not under autocast
        assert "_Conv2dSparseGradBackward" not in train_step(fast)[1]


@pytest.mark.parametrize("shape,cout,stride,padding,channels_last", [
    ((2, 16, 19, 23), 12, 1, 1, True),   # uneven map, as the 800x1200 model's levels
    ((2, 16, 19, 23), 12, 3, 1, True),   # head stride 3 (the 1200x1200 model)
    ((2, 16, 9, 7), 12, 2, 0, False),    # no padding, contiguous input
    ((2, 8, 3, 3), 6, 1, 0, True),       # a 1x1 output
])
@pytest.mark.parametrize("density", [0.0, 0.1, 0.9])
def test_sparse_head_backward_equals_dense_convolution(shape, cout, stride, padding,
                                                       channels_last, density):
    """conv2d_sparse_grad: the output of F.conv2d, and its input, weight and bias
    gradients for output gradients that are zero except at some locations (empty, sparse,
    and dense enough for the dense fallback, DENSE_FRACTION)."""
    g = torch.Generator().manual_seed(int(density * 10) + stride)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(shape, generator=g).contiguous(memory_format=fmt)
    w = torch.randn(cout, shape[1], 3, 3, generator=g).contiguous(memory_format=fmt)
    b = torch.randn(cout, generator=g)
    results = []
    for conv in (torch.nn.functional.conv2d, conv2d_sparse_grad):
        xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
        y = conv(xs, ws, bs, (stride, stride), (padding, padding))
        if not results:
            locations = y.shape[0] * y.shape[2] * y.shape[3]
            mask = torch.zeros(locations, dtype=torch.bool)
            mask[torch.randperm(locations, generator=g)[:round(density * locations)]] = True
            mask = mask.view(y.shape[0], 1, *y.shape[2:])
            grad = torch.randn(y.shape, generator=g) * mask
        y.backward(grad)
        results.append((y.detach(), xs.grad, ws.grad, bs.grad))
    assert (density > DENSE_FRACTION) == (mask.float().mean() > DENSE_FRACTION)
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, atol=1e-5 * max(want.abs().max().item(), 1),
                                   rtol=0)
    assert results[1][1].is_contiguous(memory_format=fmt)  # the input's memory format
    assert results[1][2].is_contiguous(memory_format=fmt)


def test_bfloat16_inference_within_documented_tolerance(plain):
    """Opt-in MODEL.SSD.INFERENCE_DTYPE bfloat16, with logits and box deltas in a trained
    model's range (largest about 15): both within 2% of that range of fp32, and at least 90%
    of the fp32 detections reproduced (same class, IoU >= 0.9). README: "Speed options and
    their tolerances"."""
    inputs = images()
    x = plain.preprocess_image(inputs).tensor
    fp32 = ref.scale_heads(copy.deepcopy(plain), x)
    bf16 = copy_of(fp32, "MODEL.SSD.INFERENCE_DTYPE", "bfloat16")
    with torch.no_grad():
        (la, ca, _), (lb, cb, _) = fp32.forward_network(x), bf16.forward_network(x)
    assert cb.dtype == lb.dtype == torch.float32
    assert (ca - cb).abs().max() <= 0.02 * ca.abs().max()
    assert (la - lb).abs().max() <= 0.02 * la.abs().max()
    matched = total = 0
    for x32, x16 in zip(detect(fp32, inputs), detect(bf16, inputs)):
        iou = pairwise_iou(x32.pred_boxes, x16.pred_boxes)
        iou[x32.pred_classes[:, None] != x16.pred_classes[None]] = 0
        matched += int((iou.max(dim=1).values >= 0.9).sum())
        total += len(x32)
    assert total > 100 and matched >= 0.9 * total


def test_invalid_inference_dtype_is_refused():
    with pytest.raises(ValueError, match="INFERENCE_DTYPE"):
        build("MODEL.SSD.INFERENCE_DTYPE", "int8")


# ---- the vectorised postprocess against the reference's per-class loop -----------------
def test_postprocess_equals_reference_decode_with_crowded_classes():
    """15 classes, 3000 boxes: several classes with more than TOPK_CANDIDATES_TEST (200)
    candidates and more than DETECTIONS_PER_IMAGE (200) detections over all, two images."""
    model = build("MODEL.SSD.NUM_CLASSES", "14")
    g = torch.Generator().manual_seed(0)
    R, N, H, W = 3000, 2, 128, 128
    c = torch.rand(R, 2, generator=g) * 0.9 + 0.05
    wh = torch.rand(R, 2, generator=g) * 0.3 + 0.02
    dboxes = torch.cat([c, wh], 1)  # normalised xywh
    anchors = ref.default_boxes_ltrb(dboxes) * torch.tensor([W, H, W, H])
    loc = torch.randn(N, R, 4, generator=g) * 0.5
    logits = torch.randn(N, R, 15, generator=g) * 2.0
    logits[..., 3] += 2.5  # crowded classes
    logits[..., 7] += 2.0
    conf = torch.cat([logits[..., 1:], logits[..., :1]], dim=2)  # background last
    ours = model.inference(loc, conf, anchors, (H, W))
    want = ref.reference_decode(loc.transpose(1, 2), logits.transpose(1, 2), dboxes)
    for r, (boxes, labels, scores) in zip(ours, want):
        assert len(r) == len(scores) == 200
        counts = torch.bincount(labels, minlength=15)
        assert counts.max() > 0 and (torch.softmax(logits, -1)[0, :, 3] > 0.05).sum() > 200
        got = Instances(r.image_size, pred_boxes=r.pred_boxes, scores=r.scores,
                        pred_classes=r.pred_classes + 1)
        want_i = Instances(r.image_size, pred_boxes=Boxes(boxes * torch.tensor([W, H, W, H])),
                           scores=scores, pred_classes=labels)
        assert_same_detections([got], [want_i], box_tol=1e-3, score_tol=1e-6)
        assert math.isclose(r.scores[0].item(), scores[0].item(), rel_tol=1e-6)
