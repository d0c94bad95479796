"""ssd_r34: the MLPerf SSD-ResNet34 detector as a Detectron2 extension.

``import ssd_r34`` registers the backbone, anchor generator, head and meta-architecture
into Detectron2's registries, and the built-in ``shapes_train`` / ``shapes_val`` data sets.
"""
from .config import add_ssd_config, get_ssd_cfg
from .backbone import build_ssd_resnet34_backbone
from .anchor_generator import SSDAnchorGenerator
from .head import SSD_HEAD_REGISTRY, SSDHead
from .meta_arch import SSD

__all__ = ["add_ssd_config", "get_ssd_cfg", "build_ssd_resnet34_backbone", "SSDAnchorGenerator",
           "SSD_HEAD_REGISTRY", "SSDHead", "SSD"]
