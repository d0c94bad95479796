"""oneDNN post-op fusion for float32 inference on CPU (MODEL.SSD.ONEDNN_POST_OPS): in the
BatchNorm-folded copy of the backbone, each ReLU and residual addition runs inside the
convolution before it (``torch.ops.mkldnn._convolution_pointwise``; docs/layers.md)."""
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.layers import Conv2d
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem

__all__ = ["onednn_fusion_available", "fuse_for_cpu"]


def onednn_fusion_available() -> bool:
    """Whether this PyTorch build has oneDNN with the fused convolution operator."""
    try:
        return (torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._convolution_pointwise.binary is not None)
    except (AttributeError, RuntimeError):
        return False


class FusedConv(nn.Module):
    """A Detectron2 ``Conv2d`` without norm (activation None or ReLU) as one oneDNN
    convolution with its ReLU, or ``+ other`` then ReLU, as post-ops."""

    def __init__(self, conv: Conv2d, relu: bool):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.unary = "relu" if relu else "none"

    def forward(self, x, add_relu=None, in_place=False):
        # conv(x) (+ ReLU), or relu(conv(x) + add_relu), with in_place into add_relu.
        args = (self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups)
        if add_relu is None:
            return torch.ops.mkldnn._convolution_pointwise(x, *args, self.unary, [], "")
        post_ops = ("add", 1.0, "relu", [], "")
        if in_place:
            return torch.ops.mkldnn._convolution_pointwise_.binary(add_relu, x, *args, *post_ops)
        return torch.ops.mkldnn._convolution_pointwise.binary(x, add_relu, *args, *post_ops)


class FusedBasicBlock(nn.Module):
    """Detectron2's ``BasicBlock`` with folded norms: relu(conv2(relu(conv1(x))) + shortcut).
    The sum is written into the shortcut (oneDNN's in-place form): always into a projection;
    into the input itself only when ``input_is_private`` (not the first block of its stage,
    so the input is the previous block's output, held by no one else)."""

    def __init__(self, block: BasicBlock, input_is_private: bool = False):
        super().__init__()
        self.conv1 = FusedConv(block.conv1, relu=True)
        self.conv2 = FusedConv(block.conv2, relu=False)
        self.shortcut = None if block.shortcut is None else FusedConv(block.shortcut, False)
        self.input_is_private = input_is_private

    def forward(self, x):
        out = self.conv1(x)
        if self.shortcut is None:
            return self.conv2(out, add_relu=x, in_place=self.input_is_private)
        return self.conv2(out, add_relu=self.shortcut(x), in_place=True)


class FusedStem(nn.Module):
    """Detectron2's ``BasicStem`` with a folded norm: max_pool(relu(conv1(x)))."""

    def __init__(self, stem: BasicStem):
        super().__init__()
        self.conv1 = FusedConv(stem.conv1, relu=True)

    def forward(self, x):
        return F.max_pool2d(self.conv1(x), kernel_size=3, stride=2, padding=1)


def _convertible(conv) -> bool:
    return (isinstance(conv, Conv2d) and conv.norm is None and conv.padding_mode == "zeros"
            and conv.activation in (None, F.relu, F.relu_))


@torch.no_grad()
def fuse_for_cpu(module: nn.Module) -> nn.Module:
    """Replace, in place, every BasicStem, BasicBlock and ReLU ``Conv2d`` whose norms are
    folded (``fold_batch_norms``) by its fused form; returns ``module``."""
    for i, (name, child) in enumerate(list(module.named_children())):
        if type(child) is BasicStem and _convertible(child.conv1):
            setattr(module, name, FusedStem(child))
        elif type(child) is BasicBlock and all(
                c is None or _convertible(c) for c in (child.conv1, child.conv2, child.shortcut)):
            # Within a stage (nn.Sequential), a block after the first gets a private input.
            private = isinstance(module, nn.Sequential) and i > 0
            setattr(module, name, FusedBasicBlock(child, input_is_private=private))
        elif _convertible(child) and child.activation is not None:
            setattr(module, name, FusedConv(child, relu=True))
        else:
            fuse_for_cpu(child)
    return module
