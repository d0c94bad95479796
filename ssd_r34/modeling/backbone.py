"""The SSD-ResNet34 backbone: Detectron2's ResNet-34 (BasicBlock) truncated after res4,
with res4 at stride 1, followed by the five SSD extra blocks (the MLPerf reference,
mlcommons/inference ``vision/classification_and_detection/python/models/ssd_r34.py``).

Module names are Detectron2's (``stem.conv1``, ``res2.0.conv1.norm`` ...), so its
checkpoint heuristics apply. Shapes: N images, C channels, (h, w) a feature map's size.
"""
from collections import OrderedDict

import torch.nn.functional as F
from torch import nn

from detectron2.layers import Conv2d
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, ResNet

from ..layers import use_winograd, winograd_available

# (in, mid, out, 3x3 padding) of the five extra blocks; their 3x3 strides are
# MODEL.SSD.STRIDES[2:] and 1 for the last block.
EXTRA_BLOCKS = ((256, 256, 512, 1), (512, 256, 512, 1), (512, 128, 256, 1),
                (256, 128, 256, 0), (256, 128, 256, 0))
SSD_FEATURES = ("res4", "extra0", "extra1", "extra2", "extra3", "extra4")


def check_strides(strides):
    """MODEL.SSD.STRIDES (six positive ints [head loc, head conf, extra 0..3]) as a tuple;
    ValueError naming the key and a good value otherwise."""
    strides = tuple(strides)
    if len(strides) != 6 or not all(isinstance(s, int) and s >= 1 for s in strides):
        raise ValueError(
            f"MODEL.SSD.STRIDES must be six positive integers [head loc, head conf, extra 0..3],"
            f" got {list(strides)}; e.g. [1, 1, 2, 2, 2, 1] at 300x300 or [3, 3, 2, 2, 2, 2] at"
            " 1200x1200.")
    if strides[0] != strides[1]:
        raise ValueError(
            f"MODEL.SSD.STRIDES {list(strides)}: the loc stride ({strides[0]}) and the conf "
            f"stride ({strides[1]}) must be equal, otherwise the box regressor and the classifier"
            " disagree on the number of default boxes. Set the first two numbers equal.")
    return strides


def extra_block(in_channels, mid_channels, out_channels, stride, padding) -> nn.Sequential:
    """``conv1`` Conv1x1(in, mid) + ReLU, ``conv2`` Conv3x3(mid, out, stride, padding) + ReLU,
    with bias, no norm."""
    convs = OrderedDict(
        conv1=Conv2d(in_channels, mid_channels, kernel_size=1, activation=F.relu),
        conv2=Conv2d(mid_channels, out_channels, kernel_size=3, stride=stride, padding=padding,
                     activation=F.relu))
    for conv in convs.values():
        nn.init.xavier_uniform_(conv.weight)
    return nn.Sequential(convs)


class SSDResNet(ResNet):
    """ResNet stem + res2..res4 + the SSD extra blocks; outputs ``res4, extra0..extra4``."""

    def __init__(self, stem, stages, extra_strides, freeze_at=0):
        super().__init__(stem, stages, out_features=["res4"], freeze_at=freeze_at)
        self._out_features = list(SSD_FEATURES)
        stride = self._out_feature_strides["res4"]
        for i, ((cin, mid, cout, pad), s) in enumerate(zip(EXTRA_BLOCKS, extra_strides)):
            self.add_module(f"extra{i}", extra_block(cin, mid, cout, s, pad))
            stride *= s
            self._out_feature_strides[f"extra{i}"] = stride
            self._out_feature_channels[f"extra{i}"] = cout

    def forward(self, x):
        x = super().forward(x)["res4"]
        outputs = {"res4": x}
        for name in SSD_FEATURES[1:]:
            x = getattr(self, name)(x)
            outputs[name] = x
        return outputs


def ssd_resnet34(*, strides=(1, 1, 2, 2, 2, 1), norm="BN", stem_out_channels=64,
                 freeze_at=0, in_channels=3, winograd=True, depth=34):
    """The SSD-ResNet34 backbone from plain arguments (LazyConfig: ``LazyCall(ssd_resnet34)``);
    the arguments are MODEL.SSD.STRIDES, MODEL.RESNETS.NORM, MODEL.RESNETS.STEM_OUT_CHANNELS,
    MODEL.BACKBONE.FREEZE_AT, the image channels, MODEL.SSD.WINOGRAD (res4's 3x3 convolutions
    as ``WinogradConv2d``) and MODEL.RESNETS.DEPTH (34 only). Returns an SSDResNet."""
    if depth != 34:
        raise ValueError(
            f"MODEL.RESNETS.DEPTH {depth}: the SSD-ResNet34 backbone is "
            "ResNet-34 only; set MODEL.RESNETS.DEPTH 34 (or leave it out).")
    strides = check_strides(strides)
    stem = BasicStem(in_channels=in_channels, out_channels=stem_out_channels, norm=norm)
    # (blocks, in channels, out channels, first stride) of res2, res3, res4.
    stages = [ResNet.make_stage(BasicBlock, n, in_channels=cin, out_channels=cout,
                                stride_per_block=[stride] + [1] * (n - 1), norm=norm)
              for n, cin, cout, stride in ((3, stem_out_channels, 64, 1), (4, 64, 128, 2),
                                           (6, 128, 256, 1))]
    backbone = SSDResNet(stem, stages, extra_strides=strides[2:] + (1,), freeze_at=freeze_at)
    if winograd:
        use_winograd(backbone)
    return backbone


@BACKBONE_REGISTRY.register()
def build_ssd_resnet34_backbone(cfg, input_shape):
    """:func:`ssd_resnet34` from the config.

    Returns:
        SSDResNet mapping (N, 3, H, W) to six feature maps ``res4, extra0 .. extra4``, each
        (N, C, h, w) (C = 256, 512, 512, 256, 256, 256).
    """
    backbone = ssd_resnet34(
        strides=cfg.MODEL.SSD.STRIDES, norm=cfg.MODEL.RESNETS.NORM,
        stem_out_channels=cfg.MODEL.RESNETS.STEM_OUT_CHANNELS,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT, in_channels=input_shape.channels,
        winograd=cfg.MODEL.SSD.WINOGRAD, depth=cfg.MODEL.RESNETS.DEPTH)
    if cfg.MODEL.SSD.WINOGRAD and cfg.MODEL.DEVICE.startswith("cpu"):
        winograd_available()  # build the C++ transforms now (res4 uses them), not in a step
    return backbone
