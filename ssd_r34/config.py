"""Config keys of ssd_r34. Every key is documented where it is added."""
from detectron2.config import CfgNode as CN


def add_ssd_config(cfg):
    """Add the SSD-ResNet34 keys to a Detectron2 config (in place) and return it."""
    _C = cfg

    _C.MODEL.SSD = CN()
    # Foreground classes (80 for COCO). The background class is implicit: the classifier
    # has NUM_CLASSES + 1 outputs per default box, background last (Detectron2 style).
    _C.MODEL.SSD.NUM_CLASSES = 80
    # The seed's six strides: [head loc, head conf, extra block 0, 1, 2, 3].
    # Head loc and conf strides must be equal. 300x300: [1, 1, 2, 2, 2, 1];
    # 1200x1200 (MLPerf inference model): [3, 3, 2, 2, 2, 2].
    _C.MODEL.SSD.STRIDES = [1, 1, 2, 2, 2, 1]
    # Default-box scales S (in pixels of a 300x300 image; scaled with the image size).
    # Level l uses S[l] and S[l+1] (spec section 3), so 7 numbers for 6 levels.
    _C.MODEL.SSD.DEFAULT_BOX_SIZES = [21, 45, 99, 153, 207, 261, 315]
    # Extra aspect ratios per level; each ratio r adds two boxes (r and 1/r) to the two
    # square boxes, giving [4, 6, 6, 6, 4, 4] default boxes per location.
    _C.MODEL.SSD.DEFAULT_BOX_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
    # A default box is positive when its IoU with a ground truth is > this (strictly).
    _C.MODEL.SSD.IOU_THRESHOLD = 0.5
    # Hard negative mining: negatives kept per positive.
    _C.MODEL.SSD.NEG_POS_RATIO = 3
    # Box coding weights (wx, wy, ww, wh): the reference's 1/0.1, 1/0.1, 1/0.2, 1/0.2.
    _C.MODEL.SSD.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    # Inference: class scores must be > this to be kept.
    _C.MODEL.SSD.SCORE_THRESH_TEST = 0.05
    # Inference: candidates kept per class before NMS.
    _C.MODEL.SSD.TOPK_CANDIDATES_TEST = 200
    # Inference: per-class NMS IoU threshold.
    _C.MODEL.SSD.NMS_THRESH_TEST = 0.5
    # Inference: detections kept per image (over all classes).
    _C.MODEL.SSD.DETECTIONS_PER_IMAGE = 200
    # Head, from SSD_HEAD_REGISTRY (ssd_r34/head.py).
    _C.MODEL.SSD.HEAD_NAME = "SSDHead"
    # Run the network in channels-last memory format (faster convolutions on CPU and
    # tensor-core GPUs; same results within float tolerance).
    _C.MODEL.SSD.CHANNELS_LAST = False

    # Every image (train and test) is resized to exactly (height, width): SSD needs a
    # fixed input size, and the aspect ratio is not kept (as in the reference).
    _C.INPUT.FIXED_SIZE = (1200, 1200)
    _C.INPUT.SSD = CN()
    # SSD IoU-constrained random crop (spec section 8) in training.
    _C.INPUT.SSD.CROP = True
    # Colour jitter in training: brightness, contrast, saturation, hue (torchvision's
    # ColorJitter). All zero disables it.
    _C.INPUT.SSD.COLOR_JITTER = (0.125, 0.5, 0.5, 0.05)

    # Optimizer: "SGD" (the seed's, with SOLVER.MOMENTUM / WEIGHT_DECAY) or "AdamW"
    # (uses SOLVER.BASE_LR, SOLVER.WEIGHT_DECAY and SOLVER.BETAS).
    _C.SOLVER.OPTIMIZER = "SGD"
    # AdamW betas.
    _C.SOLVER.BETAS = (0.9, 0.999)
    return cfg


def get_ssd_cfg():
    """A fresh Detectron2 default config with the SSD keys added."""
    from detectron2.config import get_cfg

    return add_ssd_config(get_cfg())
