"""Head convolutions whose backward visits only the output locations that received a
gradient (MODEL.SSD.SPARSE_HEAD_BACKWARD, CPU training; why and how: docs/layers.md)."""
from typing import Tuple

import torch
from torch import Tensor

__all__ = ["DENSE_FRACTION", "conv2d_sparse_grad"]

# Above this fraction of active output locations the dense backward is cheaper.
DENSE_FRACTION = 0.5


class _Conv2dSparseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.stride, ctx.padding = stride, padding
        return torch.nn.functional.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        stride, padding = ctx.stride, ctx.padding
        N, C, H, W = x.shape
        cout, _, kh, kw = weight.shape
        active = (grad_out != 0).any(dim=1)  # (N, OH, OW)
        idx = active.nonzero()
        if idx.shape[0] > DENSE_FRACTION * active.numel():
            gx, gw, gb = torch.ops.aten.convolution_backward(
                grad_out, x, weight, [cout] if ctx.has_bias else None, stride, padding,
                [1, 1], False, [0, 0], 1,
                ctx.needs_input_grad[:2] + (ctx.has_bias and ctx.needs_input_grad[2],))
            return gx, gw, gb, None, None

        g = grad_out.permute(0, 2, 3, 1)[idx.unbind(1)]  # (P, Cout)
        # Per active location (n, y, x): the rows of its patch in the NHWC input flattened to
        # (N * H * W, C), (P * kh * kw,) kernel positions row-major; outside the image (in
        # the zero padding): row N * H * W.
        n, oy, ox = idx.unbind(1)
        ky, kx = torch.arange(kh, device=x.device), torch.arange(kw, device=x.device)
        iy = (oy * stride[0] - padding[0])[:, None, None] + ky[None, :, None]  # (P, kh, 1)
        ix = (ox * stride[1] - padding[1])[:, None, None] + kx[None, None, :]  # (P, 1, kw)
        inside = ((iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)).flatten()
        rows = torch.where(inside, ((n[:, None, None] * H + iy) * W + ix).flatten(), N * H * W)
        gx = gw = gb = None
        if ctx.needs_input_grad[1]:
            x_rows = x.permute(0, 2, 3, 1).reshape(N * H * W, C)  # a view if channels-last
            patches = x_rows.index_select(0, rows.clamp(max=N * H * W - 1))
            patches.masked_fill_(~inside[:, None], 0)
            # (Cout, kh * kw * C): the order of the channels-last weight; then (Cout, C, kh, kw).
            gw = (g.t() @ patches.view(len(g), kh * kw * C)).view(cout, kh, kw, C)
            gw = gw.permute(0, 3, 1, 2)
            if weight.is_contiguous():
                gw = gw.contiguous()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum(dim=0)
        if ctx.needs_input_grad[0]:
            w = weight.permute(0, 2, 3, 1).reshape(cout, -1)  # (Cout, kh * kw * C)
            cols = (g @ w).view(-1, C)  # (P * kh * kw, C)
            # One spare row takes the padding's share; the rest is the NHWC gradient.
            gx = x.new_zeros(N * H * W + 1, C).index_add_(0, rows, cols)[:-1]
            gx = gx.view(N, H, W, C).permute(0, 3, 1, 2)
            if not x.is_contiguous(memory_format=torch.channels_last) or x.is_contiguous():
                gx = gx.contiguous()
        return gx, gw, gb, None, None


def conv2d_sparse_grad(x: Tensor, weight: Tensor, bias, stride: Tuple[int, int],
                       padding: Tuple[int, int]) -> Tensor:
    """``F.conv2d(x, weight, bias, stride, padding)`` (dilation 1, one group) whose backward
    skips the output locations with a zero gradient."""
    return _Conv2dSparseGrad.apply(x, weight, bias, tuple(stride), tuple(padding))
