"""Folding eval-mode BatchNorms into the preceding convolutions (inference without
gradients, MODEL.SSD.FUSE_BN_INFERENCE)."""
import torch
from torch import nn

from detectron2.layers import Conv2d, FrozenBatchNorm2d

__all__ = ["fold_batch_norms"]


def _foldable_norm(norm) -> bool:
    return isinstance(norm, FrozenBatchNorm2d) or (
        isinstance(norm, nn.modules.batchnorm._BatchNorm) and not norm.training
        and norm.running_mean is not None)


@torch.no_grad()
def fold_batch_norms(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm (BN, SyncBN, FrozenBN) of a Detectron2 ``Conv2d`` into
    its weight and bias, in place (returns ``module``): ``conv(x, w * s) + (beta - mean * s)``
    with ``s = gamma / sqrt(var + eps)``, in float64, rounded once, in the weight's memory
    format. Other norms (training mode, GroupNorm ...) stay."""
    for conv in module.modules():
        if not isinstance(conv, Conv2d) or not _foldable_norm(getattr(conv, "norm", None)):
            continue
        norm = conv.norm
        var = norm.running_var.double()
        gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(var)
        beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(var)
        scale = gamma * torch.rsqrt(var + norm.eps)
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(var)
        weight = torch.empty_like(conv.weight)  # same dtype, device and memory format
        weight.copy_(conv.weight.double() * scale.view(-1, 1, 1, 1))
        conv.weight = nn.Parameter(weight, requires_grad=False)
        conv.bias = nn.Parameter(((bias - norm.running_mean.double()) * scale + beta).to(
            weight.dtype), requires_grad=False)
        conv.norm = None
    return module
