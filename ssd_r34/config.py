"""Config keys of ssd_r34, each documented where it is added; ``setup_cfg`` reads a config
file with ``KEY VALUE`` overrides, as every tool does."""
import logging
import os

from detectron2.config import CfgNode as CN

logger = logging.getLogger(__name__)

__all__ = ["add_ssd_config", "get_ssd_cfg", "setup_cfg", "add_dataset_files", "norm_on"]


def add_ssd_config(cfg):
    """Add the SSD-ResNet34 keys to a Detectron2 config (in place) and return it."""
    _C = cfg

    # Detectron2's keys with SSD-ResNet34's values: ResNet-34 only (other depths are refused
    # when it is built); the reference keeps 200 detections per image.
    _C.MODEL.RESNETS.DEPTH = 34
    _C.TEST.DETECTIONS_PER_IMAGE = 200

    _C.MODEL.SSD = CN()
    # Foreground classes (80 for COCO); the classifier has NUM_CLASSES + 1 outputs per
    # default box, background last (Detectron2 style).
    _C.MODEL.SSD.NUM_CLASSES = 80
    # The MLPerf training reference's six strides: [head loc, head conf, extra block 0..3];
    # loc and conf equal. 300x300: [1, 1, 2, 2, 2, 1]; 1200x1200: [3, 3, 2, 2, 2, 2].
    _C.MODEL.SSD.STRIDES = [1, 1, 2, 2, 2, 1]
    # Default-box scales S in pixels of a 300x300 image (scaled with the image); level l uses
    # S[l] and S[l+1] (SSD paper, Liu et al. 2016, 2.2; the reference's DefaultBoxes).
    _C.MODEL.SSD.DEFAULT_BOX_SIZES = [21, 45, 99, 153, 207, 261, 315]
    # Extra aspect ratios per level; ratio r adds boxes r and 1/r to the two square ones.
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
    # Speed options, each with the same results within float32 rounding (docs/speed.md):
    # the network in channels-last memory format;
    _C.MODEL.SSD.CHANNELS_LAST = True
    # inference without autograd: a cached backbone copy with BatchNorms folded into the
    # convolutions (rebuilt when a weight changes);
    _C.MODEL.SSD.FUSE_BN_INFERENCE = True
    # with it, on CPU in float32: ReLUs and residual additions as oneDNN post-ops
    # (ssd_r34/layers/onednn.py; ignored without oneDNN);
    _C.MODEL.SSD.ONEDNN_POST_OPS = True
    # training on CPU in float32: the head's backward only at locations the loss reads
    # (ssd_r34/layers/sparse_grad.py; not on GPUs);
    _C.MODEL.SSD.SPARSE_HEAD_BACKWARD = True
    # on CPU in float32 and channels-last: res4's 3x3 convolutions by Winograd F(2x2, 3x3)
    # (ssd_r34/layers/winograd.py; the direct convolution where its C++ build fails).
    _C.MODEL.SSD.WINOGRAD = True
    # Inference precision of the network: "float32", "bfloat16" / "float16" (autocast; box
    # decoding, softmax and NMS stay float32; docs/speed.md), or "int8" in an engine
    # (INFERENCE_BACKEND onnxruntime / openvino, INT8.CALIBRATION_DIR; docs/int8.md).
    _C.MODEL.SSD.INFERENCE_DTYPE = "float32"
    # Who runs backbone + heads at inference: "pytorch", "onnxruntime" or "openvino" (the
    # network exported to ONNX; pre- and post-processing stay ssd_r34's, docs/int8.md).
    # Training always runs PyTorch.
    _C.MODEL.SSD.INFERENCE_BACKEND = "pytorch"
    # Intra-op threads of the onnxruntime / openvino backend; 0 = torch's (one per core).
    _C.MODEL.SSD.BACKEND_THREADS = 0
    # Post-training static INT8 quantisation (tools/calibrate.py, docs/int8.md).
    _C.MODEL.SSD.INT8 = CN()
    # Folder written by tools/calibrate.py; refused when made for other weights, input
    # size or backend.
    _C.MODEL.SSD.INT8.CALIBRATION_DIR = ""
    # Registered data set whose first CALIBRATION_IMAGES images calibrate the activation
    # ranges; "" = DATASETS.TRAIN[0].
    _C.MODEL.SSD.INT8.CALIBRATION_DATASET = ""
    _C.MODEL.SSD.INT8.CALIBRATION_IMAGES = 32
    # Weights quantised per output channel (True) or per tensor (onnxruntime only).
    _C.MODEL.SSD.INT8.PER_CHANNEL = True
    # Activation ranges: "minmax"; onnxruntime also "percentile" or "entropy".
    _C.MODEL.SSD.INT8.METHOD = "minmax"
    # Module-name prefixes that stay float32 ("head", "backbone.stem", ...); () = none.
    _C.MODEL.SSD.INT8.FLOAT_LAYERS = ()

    # Every image is resized to exactly (height, width), aspect ratio not kept (reference).
    _C.INPUT.FIXED_SIZE = (1200, 1200)
    # Evaluation / inference decoding and resize (training always "pil"): "pil" (Detectron2's
    # read_image and T.Resize, the training reference's) or "cv2-float" (the MLPerf inference
    # harness's float32 OpenCV resize and normalisation, bit for bit; docs/data.md).
    _C.INPUT.RESIZE_IMPL = "pil"
    _C.INPUT.SSD = CN()
    # SSD IoU-constrained random crop in training (the reference's SSDCropping).
    _C.INPUT.SSD.CROP = True
    # Training colour jitter: brightness, contrast, saturation, hue; all zero = none.
    _C.INPUT.SSD.COLOR_JITTER = (0.125, 0.5, 0.5, 0.05)
    # Training: skip unreadable images with a warning, instead of stopping with an error
    # naming the file (docs/validation.md). Evaluation never skips.
    _C.INPUT.SSD.SKIP_UNREADABLE_IMAGES = False

    # Optimizer: "SGD" (the reference's) or "AdamW" (with SOLVER.BETAS).
    _C.SOLVER.OPTIMIZER = "SGD"
    _C.SOLVER.BETAS = (0.9, 0.999)
    # Mixed precision (SOLVER.AMP.ENABLED): "float16" (CUDA, with a GradScaler) or
    # "bfloat16" (CUDA or CPU autocast). Losses stay float32.
    _C.SOLVER.AMP.DTYPE = "float16"
    # At the end of training, compare digests of the weights across ranks: differing
    # parameters raise, differing buffers (per-rank BN statistics) warn.
    _C.SOLVER.CHECK_REPLICAS = True

    # Also evaluate after each of these iteration counts (the reference's --evaluation).
    _C.TEST.EVAL_ITERS = ()
    # Stop at the first evaluation whose box AP reaches this fraction (the reference's
    # --threshold 0.212); 0 = never. metrics.json records "target_reached" (0/1).
    _C.TEST.TARGET_AP = 0.0

    # MLPerf training logs by rank 0 (ssd_r34/engine/mllog_hook.py, docs/mlperf_logging.md).
    _C.MLPERF = CN()
    # The log file, relative to OUTPUT_DIR unless absolute; "" = no log.
    _C.MLPERF.LOG_FILE = ""
    # submission_division "open" or "closed" (the checker then applies the closed rules).
    _C.MLPERF.DIVISION = "open"
    # submission_status: "onprem", "cloud", "preview" or "research".
    _C.MLPERF.STATUS = "research"
    # submission_org and submission_platform ("" = "<processes>x<device type>").
    _C.MLPERF.ORG = "ssd_r34"
    _C.MLPERF.PLATFORM = ""
    # Your own data sets, registered in every process that sets up from this config
    # (docs/data.md): COCO json files ((NAME, JSON_FILE, IMAGE_ROOT), ...), --dataset-coco;
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
    from detectron2.config import get_cfg

    return add_ssd_config(get_cfg())


def add_dataset_files(cfg, coco=None, voc=None):
    """Append data sets named on a command line to DATASETS.COCO / DATASETS.VOC (in place),
    with absolute paths.

    Args:
        cfg: a config, not frozen.
        coco: [(NAME, JSON_FILE, IMAGE_ROOT), ...] or None.
        voc: [(NAME, DIRNAME, SPLIT) or (NAME, DIRNAME, SPLIT, "a,b,..."), ...] or None.
    """
    if coco:
        cfg.DATASETS.COCO = tuple(tuple(e) for e in cfg.DATASETS.COCO) + tuple(
            (name, os.path.abspath(js), os.path.abspath(root)) for name, js, root in coco)
    if voc:
        cfg.DATASETS.VOC = tuple(tuple(e) for e in cfg.DATASETS.VOC) + tuple(
            (e[0], os.path.abspath(e[1]), *e[2:]) for e in voc)
    return cfg


def setup_cfg(args):
    """The frozen config of ``args.config_file``, ``args.dataset_coco`` / ``dataset_voc``
    (optional, :func:`add_dataset_files`) and ``args.opts`` (``KEY VALUE`` overrides)."""
    cfg = get_ssd_cfg()
    cfg.merge_from_file(args.config_file)
    add_dataset_files(cfg, getattr(args, "dataset_coco", None), getattr(args, "dataset_voc", None))
    cfg.merge_from_list(list(args.opts or []))
    cfg.MODEL.RESNETS.NORM = norm_on(cfg.MODEL.DEVICE, cfg.MODEL.RESNETS.NORM)
    cfg.freeze()
    return cfg


def norm_on(device: str, norm: str) -> str:
    """MODEL.RESNETS.NORM ``norm`` as it runs on MODEL.DEVICE ``device``: SyncBN
    (``torch.nn.SyncBatchNorm``, GPUs only) runs as Detectron2's naiveSyncBN on the CPU
    (the same computation over any process group), with a warning."""
    if device == "cpu" and norm == "SyncBN":
        logger.warning("MODEL.DEVICE is cpu: MODEL.RESNETS.NORM SyncBN runs as naiveSyncBN.")
        return "naiveSyncBN"
    return norm

