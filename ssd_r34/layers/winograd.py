"""Winograd F(2x2, 3x3) convolution for the backbone's 3x3 convolutions on CPU
(MODEL.SSD.WINOGRAD): the tile transforms in C++ (csrc/winograd.cpp), the products by
``torch.mm``, forward and backward. The algorithm and when it pays: docs/layers.md."""
import functools
import hashlib
import logging
import os
import platform

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from detectron2.layers import Conv2d

from .wrappers import is_exporting

logger = logging.getLogger(__name__)

__all__ = ["conv3x3_winograd", "winograd_available", "winograd_applies", "WinogradConv2d",
           "use_winograd"]

# Channels (both sides, one side) where the products save more than the transforms cost.
MIN_CHANNELS, MIN_WIDE_CHANNELS = 128, 256
# Bytes of one band's transformed tiles (16 x tiles x channels, float32).
BAND_BYTES = 16 << 20

_G = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
_GG = torch.kron(_G, _G)  # (16, 9): row 4 i + j, column 3 a + b holds G[i, a] G[j, b]
# G J = P G for the column reversal J and the row swap P = (0 3): the transformed kernel of
# the input gradient's convolution (flipped, channels transposed) is the transformed kernel
# at the swapped index, transposed. _FLIPPED[4 i + j] = 4 p(i) + p(j), p = (3, 1, 2, 0).
_FLIPPED = [4 * pi + pj for pi in (3, 1, 2, 0) for pj in (3, 1, 2, 0)]


def _isa_tag() -> str:
    # A short tag of this CPU's instruction set (the build uses -march=native).
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = platform.processor()
    return hashlib.sha1((platform.machine() + flags).encode()).hexdigest()[:10]


def _prebuilt(source: str):
    # The module the package build made, if built from this winograd.cpp (setup.py stamps
    # it with the first 16 hex digits of the source's SHA-256).
    try:
        from . import _winograd_C as ext
    except ImportError:
        return None
    with open(source, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()[:16]
    if getattr(ext, "source_sha", None) != sha:
        logger.info("The prebuilt Winograd transforms come from another winograd.cpp: "
                    "building them again.")
        return None
    return ext


@functools.lru_cache(maxsize=None)
def _extension():
    """The compiled transforms (prebuilt, else built now), or None with one warning."""
    source = os.path.join(os.path.dirname(__file__), "csrc", "winograd.cpp")
    ext = _prebuilt(source)
    if ext is not None:
        return ext
    flags = ["-O3", "-fopenmp"] + (["-march=native"] if platform.machine() in
                                   ("x86_64", "AMD64") else [])
    # cpp_extension warns on CPU-only machines that it found no CUDA: irrelevant here.
    cpp_logger = logging.getLogger("torch.utils.cpp_extension")
    level = cpp_logger.level
    cpp_logger.setLevel(logging.ERROR)
    try:
        from torch.utils.cpp_extension import load

        return load(name=f"ssd_r34_winograd_{_isa_tag()}", sources=[source],
                    extra_cflags=flags, verbose=False)
    except Exception as e:  # no compiler, no headers, ...: run the direct convolution
        logger.warning(
            "MODEL.SSD.WINOGRAD: could not build %s (%s: %s); the backbone uses the direct "
            "convolution. Install a C++ compiler (g++) and Python headers, or set "
            "MODEL.SSD.WINOGRAD False to skip this.", source, type(e).__name__, e)
        return None
    finally:
        cpp_logger.setLevel(level)


def winograd_available() -> bool:
    """Whether the C++ transforms are built (builds them on the first call)."""
    return _extension() is not None


def winograd_applies(x: Tensor, weight: Tensor) -> bool:
    """Whether ``conv3x3_winograd`` runs: a plain (not fake) CPU float32 channels-last
    tensor, no autocast or export, and the C++ transforms built."""
    return (type(x) is Tensor and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and x.dim() == 4 and x.numel() > 0
            and x.is_contiguous(memory_format=torch.channels_last)
            and not torch.is_autocast_enabled("cpu") and not is_exporting()
            and winograd_available())


def _bands(x: Tensor, *channels: int):
    # Per band of the tiles of x: first tile, last tile + 1, and for each of ``channels`` a
    # (16, tiles, c) buffer (the same storage every band).
    n, _, h, w = x.shape
    tiles = n * ((h + 1) // 2) * ((w + 1) // 2)
    band = max(1, min(BAND_BYTES // (16 * 4 * max(channels)), tiles))
    bufs = [x.new_empty(16 * band * c) for c in channels]
    for t0 in range(0, tiles, band):
        t = min(band, tiles - t0)
        yield t0, t0 + t, [b[:16 * t * c].view(16, t, c) for b, c in zip(bufs, channels)]


def _convolve(x: Tensor, u: Tensor, flipped: bool = False) -> Tensor:
    # conv2d(x, w, stride 1, padding 1), channels-last, from u = G w G^T (16, K, C); with
    # ``flipped``, with w flipped and its channels transposed (the input gradient's).
    ext = _extension()
    n, c, h, w = x.shape
    k = u.shape[2] if flipped else u.shape[1]
    y = torch.empty(n, k, h, w, dtype=x.dtype, memory_format=torch.channels_last)
    for t0, t1, (v, m) in _bands(x, c, k):
        ext.input_transform(x, t0, t1, v)
        for i in range(16):
            torch.mm(v[i], u[_FLIPPED[i]] if flipped else u[i].t(), out=m[i])
        ext.output_transform(m, t0, t1, y)
    return y


def _kernel_grad(x: Tensor, grad_y: Tensor) -> Tensor:
    # Gradient of the (K, C, 3, 3) kernel of conv2d(x, w, stride 1, padding 1).
    ext = _extension()
    c, k = x.shape[1], grad_y.shape[1]
    grad_u = x.new_zeros(16, k, c)
    for t0, t1, (v, g) in _bands(x, c, k):
        ext.input_transform(x, t0, t1, v)
        ext.output_grad_transform(grad_y, t0, t1, g)
        for i in range(16):
            grad_u[i].addmm_(g[i].t(), v[i])
    # The gradient of the transformed kernel back to (K, C, 3, 3): G^T dU G.
    return torch.mm(grad_u.view(16, k * c).t(), _GG.to(grad_u)).view(k, c, 3, 3)


class _Conv3x3Winograd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        # (K, C, 3, 3) kernel -> (16, K, C): G w G^T for every (k, c), by kron(G, G) (16 x 9).
        k, c = weight.shape[:2]
        u = torch.mm(_GG.to(weight), weight.reshape(k * c, 9).t()).view(16, k, c)
        ctx.save_for_backward(x, u)
        return _convolve(x, u)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, u = ctx.saved_tensors
        grad_y = grad_y.contiguous(memory_format=torch.channels_last)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _convolve(grad_y, u, flipped=True)
        if ctx.needs_input_grad[1]:
            grad_w = _kernel_grad(x, grad_y)
        return grad_x, grad_w


def conv3x3_winograd(x: Tensor, weight: Tensor) -> Tensor:
    """``F.conv2d(x, weight, None, stride=1, padding=1)`` by Winograd F(2x2, 3x3), for a
    channels-last float32 (N, C, H, W) CPU input and a (K, C, 3, 3) kernel; differentiable in
    both (once). Returns channels-last. Check ``winograd_applies`` first."""
    if x.dim() != 4 or weight.dim() != 4 or weight.shape[-2:] != (3, 3) \
            or x.shape[1] != weight.shape[1]:
        raise ValueError(f"conv3x3_winograd needs an (N, C, H, W) input and a (K, C, 3, 3) "
                         f"kernel, got {tuple(x.shape)} and {tuple(weight.shape)}")
    if not winograd_applies(x, weight):
        raise ValueError("conv3x3_winograd needs a channels-last float32 CPU input outside "
                         "autocast and export, and the built C++ transforms "
                         "(see winograd_applies)")
    return _Conv3x3Winograd.apply(x, weight)


class WinogradConv2d(Conv2d):
    """Detectron2's ``Conv2d`` (3x3, stride 1, padding 1), by Winograd where
    ``winograd_applies``; same parameters, norm, activation and state-dict keys."""

    def forward(self, x):
        if not winograd_applies(x, self.weight):
            return super().forward(x)
        x = conv3x3_winograd(x, self.weight)
        x = x if self.bias is None else x + self.bias.view(1, -1, 1, 1)
        x = x if self.norm is None else self.norm(x)
        return x if self.activation is None else self.activation(x)


def use_winograd(module: nn.Module) -> int:
    """Make every 3x3 stride-1 ``Conv2d`` under ``module`` whose channels gain
    (``MIN_CHANNELS``, ``MIN_WIDE_CHANNELS``) a ``WinogradConv2d``, in place; returns how many.
    No state is added and no random number drawn: a seed gives the same weights either way."""
    count = 0
    for m in module.modules():
        if (type(m) is Conv2d and m.kernel_size == (3, 3) and m.stride == (1, 1)
                and m.padding == (1, 1) and m.dilation == (1, 1) and m.groups == 1
                and m.padding_mode == "zeros"
                and min(m.in_channels, m.out_channels) >= MIN_CHANNELS
                and max(m.in_channels, m.out_channels) >= MIN_WIDE_CHANNELS):
            m.__class__ = WinogradConv2d
            count += 1
    return count
