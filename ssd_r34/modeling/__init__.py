"""The SSD-ResNet34 model. Importing it registers the backbone, the anchor generator and the
meta-architecture in Detectron2's registries."""
from .anchor_generator import SSDAnchorGenerator
from .backbone import build_ssd_resnet34_backbone
from .head import SSD_HEAD_REGISTRY, SSDHead
from .meta_arch import SSD
from .postprocessing import postprocess_single_image, rescale_detections

__all__ = ["SSDAnchorGenerator", "build_ssd_resnet34_backbone", "SSD_HEAD_REGISTRY", "SSDHead",
           "SSD", "postprocess_single_image", "rescale_detections"]
