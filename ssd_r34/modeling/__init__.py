"""The SSD-ResNet34 model: backbone, head, default boxes (anchor generator), the
meta-architecture, box operations and postprocessing. Importing it registers the backbone,
the anchor generator and the meta-architecture in Detectron2's registries."""
from .anchor_generator import SSDAnchorGenerator
from .backbone import build_ssd_resnet34_backbone, check_strides
from .box_ops import batched_pairwise_iou, hard_negative_mask, match_default_boxes, per_class_nms
from .head import SSD_HEAD_REGISTRY, SSDHead, build_ssd_head
from .meta_arch import SSD
from .postprocessing import postprocess_single_image, rescale_detections

__all__ = ["SSDAnchorGenerator", "build_ssd_resnet34_backbone", "check_strides",
           "batched_pairwise_iou", "hard_negative_mask", "match_default_boxes", "per_class_nms",
           "SSD_HEAD_REGISTRY", "SSDHead", "build_ssd_head", "SSD", "postprocess_single_image",
           "rescale_detections"]
