"""The SSD head: one 3x3 box-regression conv and one 3x3 classification conv per source.

Shapes: N images, C channels of a source, (h, w) its size, A boxes per location, K classes.
"""
from typing import List

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d
from detectron2.utils.registry import Registry

from ..layers import conv2d_sparse_grad, is_exporting
from .backbone import check_strides

# Heads by MODEL.SSD.HEAD_NAME, called as build_ssd_head calls them.
SSD_HEAD_REGISTRY = Registry("SSD_HEAD")


def build_ssd_head(cfg, input_shapes, num_anchors):
    """The head MODEL.SSD.HEAD_NAME for the six sources' ShapeSpecs and A per level."""
    return SSD_HEAD_REGISTRY.get(cfg.MODEL.SSD.HEAD_NAME)(cfg, input_shapes, num_anchors)


@SSD_HEAD_REGISTRY.register()
class SSDHead(nn.Module):
    """Per level: ``loc`` Conv3x3(C, A*4) and ``conf`` Conv3x3(C, A*(K+1)), with bias.
    Channels are anchor-major (Detectron2's layout): loc ``a*4 + k`` is coordinate k of box
    a, conf ``a*(K+1) + c`` class c of box a, background last (c = K). With
    SPARSE_HEAD_BACKWARD, in CPU float32 training (no autocast or export), the backward
    visits only the locations the loss reads (ssd_r34/layers/sparse_grad.py)."""

    @configurable
    def __init__(self, *, in_channels: List[int], num_anchors: List[int], num_classes: int,
                 stride: int = 1, sparse_backward: bool = True):
        """
        Args:
            in_channels: channels of each of the six sources.
            num_anchors: default boxes per location of each source ([4, 6, 6, 6, 4, 4]).
            num_classes: MODEL.SSD.NUM_CLASSES (foreground; the background is added).
            stride: MODEL.SSD.STRIDES[0] (== STRIDES[1]).
            sparse_backward: MODEL.SSD.SPARSE_HEAD_BACKWARD.
        """
        super().__init__()
        self.num_classes, self.sparse_backward = num_classes, sparse_backward
        self.loc, self.conf = nn.ModuleList(), nn.ModuleList()
        for channels, a in zip(in_channels, num_anchors):
            for convs, k in ((self.loc, 4), (self.conf, self.num_classes + 1)):
                conv = Conv2d(channels, a * k, kernel_size=3, stride=stride, padding=1)
                nn.init.xavier_uniform_(conv.weight)
                convs.append(conv)

    @classmethod
    def from_config(cls, cfg, input_shapes, num_anchors):
        return {"in_channels": [s.channels for s in input_shapes],
                "num_anchors": list(num_anchors),
                "num_classes": cfg.MODEL.SSD.NUM_CLASSES,
                "stride": check_strides(cfg.MODEL.SSD.STRIDES)[0],
                "sparse_backward": cfg.MODEL.SSD.SPARSE_HEAD_BACKWARD}

    def forward(self, features):
        """
        Args:
            features: list of the six sources, each (N, C, h, w).
        Returns:
            (list of loc maps (N, A*4, h', w'), list of conf maps (N, A*(K+1), h', w')),
            h', w' the sizes after the head's stride.
        """
        return ([self._conv(loc, x) for loc, x in zip(self.loc, features)],
                [self._conv(conf, x) for conf, x in zip(self.conf, features)])

    def _conv(self, conv, x):
        if (self.sparse_backward and self.training and torch.is_grad_enabled()
                and x.device.type == "cpu" and x.dtype == torch.float32
                and not torch.is_autocast_enabled("cpu") and not is_exporting()):
            return conv2d_sparse_grad(x, conv.weight, conv.bias, conv.stride, conv.padding)
        return conv(x)
