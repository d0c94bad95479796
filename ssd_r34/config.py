"""Config keys of ssd_r34, each documented where it is added; ``setup_cfg`` for the tools."""
import logging
import os

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

logger = logging.getLogger(__name__)

__all__ = ["add_ssd_config", "get_ssd_cfg", "setup_cfg", "norm_on"]


def add_ssd_config(cfg):
    """Add the SSD-ResNet34 keys to a Detectron2 config (in place) and return it."""
    _C = cfg

    # Detectron2's keys, SSD-ResNet34's values: ResNet-34 only; 200 detections per image.
    _C.MODEL.RESNETS.DEPTH = 34
    _C.TEST.DETECTIONS_PER_IMAGE = 200

    _C.MODEL.SSD = CN()
    # Foreground classes (80 for COCO); + 1 outputs per default box, background last.
    _C.MODEL.SSD.NUM_CLASSES = 80
    # The reference's six strides [loc, conf (equal), extra block 0..3]; 1200x1200: 3 3 2 2 2 2.
    _C.MODEL.SSD.STRIDES = [1, 1, 2, 2, 2, 1]
    # Default-box scales S in pixels of a 300x300 image; level l uses S[l], S[l+1] (SSD paper).
    _C.MODEL.SSD.DEFAULT_BOX_SIZES = [21, 45, 99, 153, 207, 261, 315]
    # Extra aspect ratios per level; r adds boxes r and 1/r to the two square ones.
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
    # Head, from SSD_HEAD_REGISTRY (ssd_r34/modeling/head.py).
    _C.MODEL.SSD.HEAD_NAME = "SSDHead"
    # Speed options, same results within float32 rounding (docs/speed.md): channels-last;
    _C.MODEL.SSD.CHANNELS_LAST = True
    # inference without autograd: a cached backbone copy with BatchNorms folded in;
    _C.MODEL.SSD.FUSE_BN_INFERENCE = True
    # with it, CPU float32: ReLUs and residual additions as oneDNN post-ops (layers/onednn.py);
    _C.MODEL.SSD.ONEDNN_POST_OPS = True
    # CPU float32 training: the head's backward only where the loss reads (layers/sparse_grad.py);
    _C.MODEL.SSD.SPARSE_HEAD_BACKWARD = True
    # CPU float32 channels-last: res4's 3x3 convolutions by Winograd (layers/winograd.py).
    _C.MODEL.SSD.WINOGRAD = True
    # Network precision at inference: "float32", "bfloat16" / "float16" (autocast, docs/speed.md)
    # or "int8" (INFERENCE_BACKEND onnxruntime / openvino, INT8.CALIBRATION_DIR; docs/int8.md).
    _C.MODEL.SSD.INFERENCE_DTYPE = "float32"
    # Who runs the network at inference: "pytorch", "onnxruntime" or "openvino" (via ONNX).
    _C.MODEL.SSD.INFERENCE_BACKEND = "pytorch"
    # Intra-op threads of the onnxruntime / openvino backend; 0 = torch's (one per core).
    _C.MODEL.SSD.BACKEND_THREADS = 0
    # Post-training static INT8 quantisation (tools/calibrate.py, docs/int8.md).
    _C.MODEL.SSD.INT8 = CN()
    # Folder written by tools/calibrate.py (refused if for other weights, size or backend).
    _C.MODEL.SSD.INT8.CALIBRATION_DIR = ""
    # Data set whose first CALIBRATION_IMAGES images calibrate; "" = DATASETS.TRAIN[0].
    _C.MODEL.SSD.INT8.CALIBRATION_DATASET = ""
    _C.MODEL.SSD.INT8.CALIBRATION_IMAGES = 32
    # Weights quantised per output channel (True) or per tensor (onnxruntime only).
    _C.MODEL.SSD.INT8.PER_CHANNEL = True
    # Activation ranges: "minmax"; onnxruntime also "percentile" or "entropy".
    _C.MODEL.SSD.INT8.METHOD = "minmax"
    # Module-name prefixes that stay float32 ("head", "backbone.stem", ...); () = none.
    _C.MODEL.SSD.INT8.FLOAT_LAYERS = ()

    # Every image is resized to exactly (height, width), aspect ratio not kept.
    _C.INPUT.FIXED_SIZE = (1200, 1200)
    # Evaluation resize: "pil" (as training) or "cv2-float" (MLPerf harness's; docs/data.md).
    _C.INPUT.RESIZE_IMPL = "pil"
    _C.INPUT.SSD = CN()
    # SSD IoU-constrained random crop in training (the reference's SSDCropping).
    _C.INPUT.SSD.CROP = True
    # Training colour jitter: brightness, contrast, saturation, hue; all zero = none.
    _C.INPUT.SSD.COLOR_JITTER = (0.125, 0.5, 0.5, 0.05)
    # Training skips unreadable images with a warning instead of stopping (docs/validation.md).
    _C.INPUT.SSD.SKIP_UNREADABLE_IMAGES = False

    # Optimizer: "SGD" (the reference's) or "AdamW" (with SOLVER.BETAS).
    _C.SOLVER.OPTIMIZER = "SGD"
    _C.SOLVER.BETAS = (0.9, 0.999)
    # SOLVER.AMP.ENABLED's dtype: "float16" (CUDA, GradScaler) or "bfloat16" (CUDA or CPU).
    _C.SOLVER.AMP.DTYPE = "float16"
    # After training, compare weight digests across ranks: parameters raise, buffers warn.
    _C.SOLVER.CHECK_REPLICAS = True

    # Also evaluate after each of these iteration counts (the reference's --evaluation).
    _C.TEST.EVAL_ITERS = ()
    # Stop at the first evaluation with box AP >= this (the reference's --threshold); 0 = never.
    _C.TEST.TARGET_AP = 0.0

    # MLPerf training logs by rank 0 (ssd_r34/engine/mllog_hook.py, docs/mlperf_logging.md).
    _C.MLPERF = CN()
    # The log file, relative to OUTPUT_DIR unless absolute; "" = no log.
    _C.MLPERF.LOG_FILE = ""
    # submission_division "open" or "closed".
    _C.MLPERF.DIVISION = "open"
    # submission_status: "onprem", "cloud", "preview" or "research".
    _C.MLPERF.STATUS = "research"
    # submission_org and submission_platform ("" = "<processes>x<device type>").
    _C.MLPERF.ORG = "ssd_r34"
    _C.MLPERF.PLATFORM = ""
    # Own data sets (docs/data.md): COCO ((NAME, JSON_FILE, IMAGE_ROOT), ...), --dataset-coco;
    _C.DATASETS.COCO = ()
    # Pascal VOC folders ((NAME, DIRNAME, SPLIT[, "class_a,class_b"]), ...), --dataset-voc.
    _C.DATASETS.VOC = ()

    # The three-stage regime of the released 1200x1200 model (tools/train_regime.py).
    _C.REGIME = CN()
    # Processes this stage ran on in the MLPerf training reference.
    _C.REGIME.NUM_GPUS = 1
    # Config of the previous stage (relative to this one); "" = a first stage.
    _C.REGIME.PREVIOUS_STAGE = ""
    # Start from the previous stage's weights after this many of its iterations.
    _C.REGIME.PREVIOUS_ITER = 0
    return cfg


def get_ssd_cfg():
    """A fresh Detectron2 default config with the SSD keys added."""
    return add_ssd_config(get_cfg())


def setup_cfg(args):
    """The frozen config of ``args.config_file``, ``args.dataset_coco`` / ``dataset_voc``
    (optional, appended to DATASETS.COCO / VOC) and ``args.opts`` (``KEY VALUE``)."""
    cfg = get_ssd_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.DATASETS.COCO = tuple(map(tuple, cfg.DATASETS.COCO)) + tuple(
        (name, os.path.abspath(js), os.path.abspath(root))
        for name, js, root in getattr(args, "dataset_coco", None) or ())
    cfg.DATASETS.VOC = tuple(map(tuple, cfg.DATASETS.VOC)) + tuple(
        (e[0], os.path.abspath(e[1]), *e[2:]) for e in getattr(args, "dataset_voc", None) or ())
    cfg.merge_from_list(list(args.opts or []))
    cfg.MODEL.RESNETS.NORM = norm_on(cfg.MODEL.DEVICE, cfg.MODEL.RESNETS.NORM)
    cfg.freeze()
    return cfg


def norm_on(device: str, norm: str) -> str:
    """MODEL.RESNETS.NORM ``norm`` as it runs on MODEL.DEVICE ``device``: SyncBN (GPUs only)
    runs as Detectron2's naiveSyncBN (the same computation) on the CPU, with a warning."""
    if device == "cpu" and norm == "SyncBN":
        logger.warning("MODEL.DEVICE is cpu: MODEL.RESNETS.NORM SyncBN runs as naiveSyncBN.")
        return "naiveSyncBN"
    return norm

