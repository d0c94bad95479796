"""MODEL.SSD.WINOGRAD (ssd_r34/layers/winograd.py): the Winograd F(2x2, 3x3) convolution, forward and
both gradients, stays within float32 rounding of the exact (float64) convolution, as the direct
float32 convolution does; the backbone uses it where it should and falls back elsewhere; a
failed build warns and leaves the direct convolution."""
import copy
import logging

import pytest
import torch
import torch.nn.functional as F

import ssd_r34.layers.winograd as wg
from conftest import make_cfg
from detectron2.modeling import build_model
from ssd_r34.layers import WinogradConv2d
from test_speed_options import grad_fn_names

pytestmark = pytest.mark.skipif(not wg.winograd_available(),
                                reason="the C++ transforms could not be built here")
CL = torch.channels_last


def rel_err(got, want):
    return float((got.double() - want).abs().max() / want.abs().max())


def conv_errors(x, w, grad_y, fn):
    """Relative errors of fn's float32 output, input gradient and kernel gradient against
    the float64 direct convolution."""
    xe, we = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    F.conv2d(xe, we, None, 1, 1).backward(grad_y.double())
    xf = x.detach().float().contiguous(memory_format=CL).requires_grad_()
    wf = w.detach().float().requires_grad_()
    y = fn(xf, wf)
    y.backward(grad_y.float().contiguous(memory_format=CL))
    want_y = F.conv2d(x.detach().double(), w.detach().double(), None, 1, 1)
    return y, (rel_err(y, want_y), rel_err(xf.grad, xe.grad), rel_err(wf.grad, we.grad))


@pytest.mark.parametrize("n,c,h,w,k", [(2, 8, 5, 7, 4), (3, 5, 1, 1, 6), (1, 16, 2, 3, 3),
                                       (2, 32, 9, 6, 24), (4, 128, 19, 19, 128)])
def test_forward_and_gradients_within_float32_rounding(n, c, h, w, k):
    g = torch.Generator().manual_seed(n * 100 + h)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    weight = torch.randn(k, c, 3, 3, generator=g, dtype=torch.float64) / (3 * c ** 0.5)
    grad_y = torch.randn(n, k, h, w, generator=g, dtype=torch.float64)
    y, wino = conv_errors(x, weight, grad_y, wg.conv3x3_winograd)
    _, direct = conv_errors(x, weight, grad_y, lambda a, b: F.conv2d(a, b, None, 1, 1))
    assert y.is_contiguous(memory_format=CL) and y.shape == (n, k, h, w)
    for e_wino, e_direct in zip(wino, direct):  # output, input gradient, kernel gradient
        assert e_wino < max(4 * e_direct, 1e-6), (wino, direct)


def test_bands_give_the_same_result(monkeypatch):
    """Several bands, the last one partial, against a single band."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 16, 11, 13, generator=g).contiguous(memory_format=CL)
    w = torch.randn(8, 16, 3, 3, generator=g) * 0.1
    grad_y = torch.randn(3, 8, 11, 13, generator=g).contiguous(memory_format=CL)

    def run():
        xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = wg.conv3x3_winograd(xr, wr)
        y.backward(grad_y)
        return y, xr.grad, wr.grad

    whole = run()
    monkeypatch.setattr(wg, "BAND_BYTES", 16 * 4 * 16 * 7)  # 7 tiles a band, 126 tiles
    assert len(list(wg._bands(x, 16))) == 18
    for got, want in zip(run(), whole):
        torch.testing.assert_close(got, want, atol=1e-6 * want.abs().max().item(), rtol=0)


def test_backbone_uses_winograd_for_res4_only():
    torch.manual_seed(0)
    model = build_model(make_cfg("configs/ssd_r34_300.yaml"))
    torch.manual_seed(0)
    direct = build_model(make_cfg("configs/ssd_r34_300.yaml", "MODEL.SSD.WINOGRAD", "False"))
    names = {n for n, m in model.backbone.named_modules() if isinstance(m, WinogradConv2d)}
    # res4's twelve 3x3 convolutions (128 -> 256 first, then 256 -> 256), not res3's
    # (128 -> 128) nor res2's (64), nor the 1x1 shortcut.
    assert names == {f"res4.{b}.conv{i}" for b in range(6) for i in (1, 2)}
    assert not any(isinstance(m, WinogradConv2d) for m in direct.modules())
    a, b = model.state_dict(), direct.state_dict()
    assert a.keys() == b.keys()  # same keys, and no random numbers drawn by the option
    assert all(torch.equal(a[k], b[k]) for k in a)


def backbone_step(model, x):
    model = copy.deepcopy(model).train()
    feats = model.backbone(x)
    loss = sum((f * torch.linspace(-1, 1, f.numel()).view_as(f)).sum() for f in feats.values())
    nodes = grad_fn_names(loss)
    loss.backward()
    return feats, {k: p.grad for k, p in model.backbone.named_parameters()}, nodes


@pytest.mark.usefixtures("default_threads")  # the bound below fails with one thread
def test_training_backbone_within_float32_rounding():
    """A training step of the backbone with the option, against the same float32 model
    without it, both measured against float64: every feature map is as close as the direct
    float32 one (within 4x, or 1e-5 of its largest magnitude). The parameter gradients of
    this small random network are ill-conditioned (a few ReLUs that flip with the last bit
    move some by up to ~10%, direct float32 included), so for them the median error over
    all parameters is compared."""
    opts = ["INPUT.FIXED_SIZE", "(96, 128)", "MODEL.SSD.STRIDES", "[1, 1, 2, 1, 1, 1]"]
    torch.manual_seed(0)
    wino = build_model(make_cfg("configs/ssd_r34_300.yaml", *opts))
    direct = build_model(make_cfg("configs/ssd_r34_300.yaml", *opts, "MODEL.SSD.WINOGRAD",
                                  "False"))
    direct.load_state_dict(wino.state_dict())
    exact = copy.deepcopy(direct).double().to(memory_format=torch.contiguous_format)
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(3))
    fw, gw, nodes_w = backbone_step(wino, x.contiguous(memory_format=CL))
    fd, gd, nodes_d = backbone_step(direct, x.contiguous(memory_format=CL))
    fe, ge, _ = backbone_step(exact, x.double())
    assert "_Conv3x3WinogradBackward" in nodes_w and "_Conv3x3WinogradBackward" not in nodes_d
    for name in fe:
        assert rel_err(fw[name], fe[name]) < max(4 * rel_err(fd[name], fe[name]), 1e-5), name
    err_w = sorted(rel_err(gw[n], ge[n]) for n in ge)
    err_d = sorted(rel_err(gd[n], ge[n]) for n in ge)
    assert err_w[len(err_w) // 2] < 2 * err_d[len(err_d) // 2] + 1e-3
    assert err_w[-1] < 0.5


@pytest.mark.parametrize("case", ["contiguous", "float64", "autocast"])
def test_falls_back_to_the_direct_convolution(case):
    torch.manual_seed(0)
    conv = WinogradConv2d(16, 8, kernel_size=3, padding=1, bias=True, activation=F.relu)
    x = torch.randn(2, 16, 6, 6).contiguous(memory_format=CL)
    if case == "contiguous":
        x = x.contiguous()
    elif case == "float64":
        x, conv = x.double(), conv.double()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "autocast"):
        assert not wg.winograd_applies(x, conv.weight)
        got = conv(x)
        want = F.relu(F.conv2d(x, conv.weight, conv.bias, 1, 1))
    assert torch.equal(got, want)
    assert got.grad_fn is None or "Winograd" not in type(got.grad_fn).__name__


def test_bias_norm_and_activation_with_winograd():
    torch.manual_seed(0)
    conv = WinogradConv2d(16, 8, kernel_size=3, padding=1, bias=True, activation=F.relu,
                          norm=torch.nn.BatchNorm2d(8).eval())
    conv.norm.running_mean.uniform_(-1, 1)
    x = torch.randn(2, 16, 7, 5).contiguous(memory_format=CL)
    assert wg.winograd_applies(x, conv.weight)
    want = F.relu(conv.norm(F.conv2d(x, conv.weight, conv.bias, 1, 1)))
    torch.testing.assert_close(conv(x), want, atol=1e-5, rtol=1e-5)


def test_bad_arguments_are_refused():
    x = torch.randn(1, 4, 5, 5).contiguous(memory_format=CL)
    with pytest.raises(ValueError, match=r"\(K, C, 3, 3\) kernel, got \(1, 4, 5, 5\) and"):
        wg.conv3x3_winograd(x, torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError, match="channels-last float32 CPU input"):
        wg.conv3x3_winograd(x.contiguous(), torch.randn(2, 4, 3, 3))
    ext = wg._extension()
    with pytest.raises(RuntimeError, match="band buffer"):
        ext.input_transform(x, 0, 9, torch.empty(16, 8, 4))
    with pytest.raises(RuntimeError, match="out of range"):
        ext.input_transform(x, 0, 10, torch.empty(16, 10, 4))


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_failed_build_warns_and_keeps_the_direct_convolution(monkeypatch):
    import torch.utils.cpp_extension as cpp

    def no_compiler(*args, **kwargs):
        raise RuntimeError("g++: command not found")

    monkeypatch.setattr(cpp, "load", no_compiler)
    monkeypatch.setattr(wg, "_prebuilt", lambda source: None)  # no module from pip install
    wg._extension.cache_clear()
    records = Records()  # (Detectron2's setup_logger may stop "ssd_r34" propagating)
    wg.logger.addHandler(records)
    try:
        assert not wg.winograd_available()
        assert len(records.messages) == 1
        assert "g++: command not found" in records.messages[0]
        assert "MODEL.SSD.WINOGRAD" in records.messages[0]
        conv = WinogradConv2d(8, 8, kernel_size=3, padding=1)
        x = torch.randn(1, 8, 4, 4).contiguous(memory_format=CL)
        assert not wg.winograd_applies(x, conv.weight)
        assert torch.equal(conv(x), F.conv2d(x, conv.weight, conv.bias, 1, 1))
    finally:
        wg.logger.removeHandler(records)
        monkeypatch.undo()
        wg._extension.cache_clear()
    assert wg.winograd_available()
