"""Config keys of ssd_r34. Every key is documented where it is added.

``add_ssd_config`` adds the keys, ``get_ssd_cfg`` gives a fresh config with them and
``setup_cfg`` reads a config file with ``KEY VALUE`` overrides (what every tool does).
"""
import logging
import math
import os
import warnings

from detectron2.config import CfgNode as CN

logger = logging.getLogger(__name__)

__all__ = ["add_ssd_config", "get_ssd_cfg", "setup_cfg", "detections_per_image",
           "check_model_config", "check_input_config", "add_dataset_files"]


def add_ssd_config(cfg):
    """Add the SSD-ResNet34 keys to a Detectron2 config (in place) and return it."""
    _C = cfg

    # Detectron2's keys with SSD-ResNet34's values: the backbone is ResNet-34 only (other
    # depths are refused when it is built), and the reference keeps 200 detections per image.
    _C.MODEL.RESNETS.DEPTH = 34
    _C.TEST.DETECTIONS_PER_IMAGE = 200

    _C.MODEL.SSD = CN()
    # Foreground classes (80 for COCO). The background class is implicit: the classifier
    # has NUM_CLASSES + 1 outputs per default box, background last (Detectron2 style).
    _C.MODEL.SSD.NUM_CLASSES = 80
    # The six strides of the MLPerf training reference: [head loc, head conf, extra block
    # 0, 1, 2, 3].
    # Head loc and conf strides must be equal. 300x300: [1, 1, 2, 2, 2, 1];
    # 1200x1200 (MLPerf inference model): [3, 3, 2, 2, 2, 2].
    _C.MODEL.SSD.STRIDES = [1, 1, 2, 2, 2, 1]
    # Default-box scales S (in pixels of a 300x300 image; scaled with the image size).
    # Level l uses S[l] and S[l+1] (the SSD paper, Liu et al. 2016, section 2.2; the MLPerf
    # reference's DefaultBoxes), so 7 numbers for 6 levels.
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
    # Deprecated: use Detectron2's TEST.DETECTIONS_PER_IMAGE. -1 = unset; any other value is
    # still honoured (with a warning) in this release.
    _C.MODEL.SSD.DETECTIONS_PER_IMAGE = -1
    # Head, from SSD_HEAD_REGISTRY (ssd_r34/modeling/head.py).
    _C.MODEL.SSD.HEAD_NAME = "SSDHead"
    # Run the network (training and inference) in channels-last memory format: faster
    # convolutions on CPU (measured in benchmarks/, docs/speed.md) and tensor-core
    # GPUs (not measured here); same results within float32 rounding.
    _C.MODEL.SSD.CHANNELS_LAST = True
    # Inference without autograd: fold the BatchNorms into the convolutions (a cached copy
    # of the backbone, rebuilt when a weight changes). Same results within float32 rounding.
    _C.MODEL.SSD.FUSE_BN_INFERENCE = True
    # With FUSE_BN_INFERENCE, on CPU in float32: run each ReLU and residual addition of that
    # copy inside its convolution (oneDNN post-ops, ssd_r34/layers/onednn.py). Same results within
    # float32 rounding; ignored where PyTorch has no oneDNN.
    _C.MODEL.SSD.ONEDNN_POST_OPS = True
    # Training on CPU in float32: the head convolutions' backward computes the gradients
    # from the output locations that received one (positives and mined negatives, a few
    # percent of them) instead of the whole maps (ssd_r34/layers/sparse_grad.py). Same gradients
    # within float32 rounding. Not used on GPUs (it would need a host synchronisation).
    _C.MODEL.SSD.SPARSE_HEAD_BACKWARD = True
    # On CPU in float32 and channels-last (training and inference without the oneDNN fused
    # copy): the backbone's 3x3 stride-1 convolutions with >= 128 channels on both sides and
    # 256 on one (res4's twelve) run by Winograd F(2x2, 3x3), 2.25x fewer multiplications,
    # forward and backward (ssd_r34/layers/winograd.py; C++ transforms built with the machine's
    # compiler on first use, the direct convolution where that fails). Same results within
    # float32 rounding.
    _C.MODEL.SSD.WINOGRAD = True
    # Inference precision of the network: "float32", or "bfloat16" / "float16" (autocast;
    # needs hardware support, e.g. AMX / AVX512-BF16 CPUs or GPUs). Box decoding, softmax and
    # NMS stay in float32. Not bit-exact: see docs/speed.md, "Speed options and their tolerances".
    # "int8" runs the network quantised in an engine (MODEL.SSD.INFERENCE_BACKEND
    # onnxruntime or openvino) with the calibration of MODEL.SSD.INT8.CALIBRATION_DIR
    # (tools/calibrate.py; docs/int8.md); refused with the "pytorch" backend.
    _C.MODEL.SSD.INFERENCE_DTYPE = "float32"
    # Who runs the network (backbone + heads) at inference: "pytorch" (ssd_r34 itself),
    # "onnxruntime" or "openvino" (the network exported to ONNX and run by that engine,
    # float32 or, with INFERENCE_DTYPE int8, quantised; openvino also takes bfloat16 on CPUs
    # with bf16 instructions). Normalisation, default boxes, decoding, softmax, NMS and the
    # rescaling stay ssd_r34's own float32 code, so every tool gives the usual Instances.
    # Used by SSDPredictor, tools/train_net.py --eval-only, tools/demo.py and
    # tools/calibrate.py (ssd_r34/inference/backends.py); training always runs PyTorch.
    _C.MODEL.SSD.INFERENCE_BACKEND = "pytorch"
    # Intra-op threads of the onnxruntime / openvino backend; 0 = torch's (one per core).
    _C.MODEL.SSD.BACKEND_THREADS = 0
    # Post-training static INT8 quantisation (tools/calibrate.py, docs/int8.md).
    _C.MODEL.SSD.INT8 = CN()
    # Folder written by tools/calibrate.py (the quantised network and calibration.json with
    # the backend, the weights' digest, the images and every scale); needed by
    # INFERENCE_DTYPE int8, refused when it was made for other weights, input size or backend.
    _C.MODEL.SSD.INT8.CALIBRATION_DIR = ""
    # Registered data set whose first CALIBRATION_IMAGES images (test pre-processing)
    # calibrate the activation ranges; "" = DATASETS.TRAIN[0].
    _C.MODEL.SSD.INT8.CALIBRATION_DATASET = ""
    _C.MODEL.SSD.INT8.CALIBRATION_IMAGES = 32
    # Weights quantised per output channel (True) or per tensor (onnxruntime only).
    _C.MODEL.SSD.INT8.PER_CHANNEL = True
    # Activation ranges: "minmax"; onnxruntime also "percentile" or "entropy" (histograms).
    _C.MODEL.SSD.INT8.METHOD = "minmax"
    # SSD module names whose layers stay float32 in the quantised network (module-name
    # prefixes: "head" = the loc / conf convolutions, "backbone.stem" = the first
    # convolution, "backbone.extra4" = the last extra block); () = quantise every layer.
    # Read by tools/calibrate.py; the calibration folder records it.
    _C.MODEL.SSD.INT8.FLOAT_LAYERS = ()

    # Every image (train and test) is resized to exactly (height, width): SSD needs a
    # fixed input size, and the aspect ratio is not kept (as in the reference).
    _C.INPUT.FIXED_SIZE = (1200, 1200)
    # How evaluation and inference images are decoded and resized to INPUT.FIXED_SIZE
    # (training always uses "pil"):
    # "pil": Detectron2's read_image (PIL) and T.Resize (PIL bilinear on uint8); the model
    #   normalises with MODEL.PIXEL_MEAN / PIXEL_STD (the MLPerf training reference's way).
    # "cv2-float": the MLPerf inference harness's way (mlcommons/inference,
    #   vision/classification_and_detection/python/dataset.py, maybe_resize +
    #   pre_process_coco_resnet34): cv2.imread (BGR), float32, INPUT.FORMAT channel order,
    #   cv2.resize INTER_LINEAR on the float image, / 255, - PIXEL_MEAN / 255, / (PIXEL_STD / 255).
    #   The mapper hands the model this normalised float image (marked "image_normalized"),
    #   which the model then does not normalise again. With the default PIXEL_MEAN / STD it
    #   equals MLPerf's pre-processing bit for bit (tests/test_mlperf.py).
    _C.INPUT.RESIZE_IMPL = "pil"
    _C.INPUT.SSD = CN()
    # SSD IoU-constrained random crop in training (the SSD paper's data augmentation; the
    # MLPerf training reference's SSDCropping).
    _C.INPUT.SSD.CROP = True
    # Colour jitter in training: brightness, contrast, saturation, hue (torchvision's
    # ColorJitter). All zero disables it.
    _C.INPUT.SSD.COLOR_JITTER = (0.125, 0.5, 0.5, 0.05)
    # Training: an image that cannot be read (missing, empty, truncated, not an image) stops
    # training with an error naming the file and the data set. True: skip it instead (the
    # loader draws another image, as for an image the crop left without boxes), with a
    # warning naming the first few skipped files and a running count (docs/validation.md).
    # Evaluation never skips.
    _C.INPUT.SSD.SKIP_UNREADABLE_IMAGES = False

    # Optimizer: "SGD" (the MLPerf reference's, with SOLVER.MOMENTUM / WEIGHT_DECAY) or "AdamW"
    # (uses SOLVER.BASE_LR, SOLVER.WEIGHT_DECAY and SOLVER.BETAS).
    _C.SOLVER.OPTIMIZER = "SGD"
    # AdamW betas.
    _C.SOLVER.BETAS = (0.9, 0.999)

    # Mixed precision (with Detectron2's SOLVER.AMP.ENABLED): "float16" or "bfloat16".
    # CUDA: Detectron2's AMPTrainer, with a GradScaler for float16 only. CPU: bfloat16
    # autocast only (float16 is refused). Losses are computed in float32 either way.
    _C.SOLVER.AMP.DTYPE = "float16"
    # At the end of training, every rank logs a SHA-256 digest of its parameters and
    # buffers; with several processes the ranks compare them and raise if the parameters
    # differ (differing buffers, e.g. per-rank BN statistics, only warn).
    _C.SOLVER.CHECK_REPLICAS = True

    # MLPerf-style evaluation (the MLPerf training reference's --evaluation): also evaluate
    # after each of these numbers of iterations (counted from 1, like TEST.EVAL_PERIOD),
    # e.g. (120000, 160000).
    _C.TEST.EVAL_ITERS = ()
    # Stop training at the first evaluation whose box AP reaches this (a fraction, as the
    # MLPerf training reference's --threshold 0.212 and the MLPerf target; Detectron2 prints
    # AP in percent). 0 = never stop early. Each evaluation records "target_reached" (0/1) in metrics.json.
    _C.TEST.TARGET_AP = 0.0

    # MLPerf training logs (mllog, package mlperf-logging; ssd_r34/engine/mlperf_logging.py,
    # docs/mlperf_logging.md), written by rank 0 for `python -m
    # mlperf_logging.compliance_checker --usage training --ruleset 1.0.0 LOG`.
    _C.MLPERF = CN()
    # The log file; "" = no log. A relative path is taken relative to OUTPUT_DIR.
    _C.MLPERF.LOG_FILE = ""
    # submission_division: "open" (any model or schedule) or "closed" (the checker then
    # also requires the MLPerf SSD hyper-parameter rules and eval_accuracy >= 0.23).
    _C.MLPERF.DIVISION = "open"
    # submission_status: "onprem", "cloud", "preview" or "research".
    _C.MLPERF.STATUS = "research"
    # submission_org and submission_platform ("" = "<processes>x<device type>", e.g. 1xcpu).
    _C.MLPERF.ORG = "ssd_r34"
    _C.MLPERF.PLATFORM = ""
    # Your own data sets, registered by name in every process that sets up from this config
    # (tools/train_net.py's workers too), so that DATASETS.TRAIN / DATASETS.TEST can name them.
    # COCO json files: ((NAME, JSON_FILE, IMAGE_ROOT), ...), Detectron2's
    # register_coco_instances; the command-line tools' --dataset-coco NAME JSON IMAGE_ROOT adds
    # one (absolute paths). Category ids may be any integers (e.g. 7 and 9): they map to
    # contiguous ids 0..K-1 in id order and back in results. docs/data.md, "Train on your own data".
    _C.DATASETS.COCO = ()
    # Pascal VOC folders (Annotations/, ImageSets/Main/SPLIT.txt, JPEGImages/):
    # ((NAME, DIRNAME, SPLIT), ...) with VOC's 20 classes, or (NAME, DIRNAME, SPLIT,
    # "class_a,class_b,...") with your own; Detectron2's register_pascal_voc.
    # --dataset-voc adds one.
    _C.DATASETS.VOC = ()

    # The three-stage regime of the released 1200x1200 model (tools/train_regime.py).
    _C.REGIME = CN()
    # GPUs (processes) this stage was trained on in the MLPerf training reference;
    # train_regime.py launches the stage with this many unless told otherwise.
    _C.REGIME.NUM_GPUS = 1
    # Config file of the stage this one starts from (relative to this config's folder);
    # "" = a first stage (weights from MODEL.WEIGHTS as given).
    _C.REGIME.PREVIOUS_STAGE = ""
    # This stage starts from the previous stage's weights after this many of its
    # iterations (weights only: fresh iteration counter, optimizer and schedule).
    _C.REGIME.PREVIOUS_ITER = 0
    return cfg


def get_ssd_cfg():
    """A fresh Detectron2 default config with the SSD keys added."""
    from detectron2.config import get_cfg

    return add_ssd_config(get_cfg())


def detections_per_image(cfg) -> int:
    """TEST.DETECTIONS_PER_IMAGE, or the deprecated MODEL.SSD.DETECTIONS_PER_IMAGE where a
    config still sets it (with a warning)."""
    old = cfg.MODEL.SSD.DETECTIONS_PER_IMAGE
    if old is not None and old >= 0:
        warnings.warn("MODEL.SSD.DETECTIONS_PER_IMAGE is deprecated and will be removed in the "
                      f"next release: set TEST.DETECTIONS_PER_IMAGE {old} instead.",
                      FutureWarning, stacklevel=2)
        return int(old)
    return int(cfg.TEST.DETECTIONS_PER_IMAGE)


def add_dataset_files(cfg, coco=None, voc=None):
    """Append data sets named on a command line to DATASETS.COCO / DATASETS.VOC (in place).

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
    """Config from ``args.config_file`` and ``args.opts`` (``KEY VALUE`` overrides), frozen.

    ``args.dataset_coco`` / ``args.dataset_voc`` (the tools' ``--dataset-coco`` /
    ``--dataset-voc``, optional) are appended to DATASETS.COCO / DATASETS.VOC with absolute
    paths, before the overrides.

    With ``MODEL.DEVICE cpu``, ``MODEL.RESNETS.NORM SyncBN`` runs as Detectron2's
    ``naiveSyncBN`` (the same computation over any process group; ``torch.nn.SyncBatchNorm``
    runs on GPUs only)."""
    cfg = get_ssd_cfg()
    cfg.merge_from_file(args.config_file)
    add_dataset_files(cfg, getattr(args, "dataset_coco", None), getattr(args, "dataset_voc", None))
    cfg.merge_from_list(list(args.opts or []))
    cfg.MODEL.RESNETS.NORM = norm_on(cfg.MODEL.DEVICE, cfg.MODEL.RESNETS.NORM)
    cfg.freeze()
    return cfg


def norm_on(device: str, norm: str) -> str:
    """The norm that runs MODEL.RESNETS.NORM ``norm`` on MODEL.DEVICE ``device``: SyncBN
    (``torch.nn.SyncBatchNorm``, GPUs only) runs as Detectron2's naiveSyncBN on the CPU
    (the same computation over any process group), with a warning."""
    if device == "cpu" and norm == "SyncBN":
        logger.warning("MODEL.DEVICE is cpu: MODEL.RESNETS.NORM SyncBN runs as naiveSyncBN.")
        return "naiveSyncBN"
    return norm


# ---------------------------------------------------------------------------------------
# Settings that cannot work are refused when the model or the loader is built, naming the
# key and a value that works (docs/validation.md).
# ---------------------------------------------------------------------------------------
def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _refuse(key: str, value, need: str, example: str):
    raise ValueError(f"{key} {value!r}: {need}; e.g. {key} {example}.")


def _check_numbers(key, value, n, need, example, ok=lambda v: True):
    try:
        values = list(value)
    except TypeError:
        _refuse(key, value, need, example)
    if (n is not None and len(values) != n) or not all(_is_number(v) and ok(v) for v in values):
        _refuse(key, value, need, example)
    return values


def check_model_config(cfg) -> None:
    """Refuse MODEL.SSD.* (and TEST.DETECTIONS_PER_IMAGE) values that cannot work, with the
    key and an example of a good value. MODEL.SSD.STRIDES is checked by the backbone
    (``check_strides``), INPUT.FIXED_SIZE against the strides by the model.

    Raises:
        ValueError: naming the first bad key.
    """
    s = cfg.MODEL.SSD
    if not _is_int(s.NUM_CLASSES) or s.NUM_CLASSES < 1:
        _refuse("MODEL.SSD.NUM_CLASSES", s.NUM_CLASSES,
                "the number of foreground classes must be an integer >= 1 (the background "
                "class is implicit)", "80 (COCO) or the data set's len(thing_classes)")
    ratios = s.DEFAULT_BOX_RATIOS
    levels = len(ratios) if isinstance(ratios, (list, tuple)) else -1
    if levels != 6 or not all(isinstance(r, (list, tuple)) and all(
            _is_number(x) and x > 0 for x in r) for r in ratios):
        _refuse("MODEL.SSD.DEFAULT_BOX_RATIOS", ratios,
                f"6 lists (one per detection level) of positive aspect ratios, got "
                f"{levels if levels >= 0 else 'no list'}", "[[2], [2, 3], [2, 3], [2, 3], [2], [2]]")
    _check_numbers("MODEL.SSD.DEFAULT_BOX_SIZES", s.DEFAULT_BOX_SIZES, 7,
                   "seven positive sizes in pixels of a 300x300 image (one more than the "
                   "six levels)", "[21, 45, 99, 153, 207, 261, 315]", lambda v: v > 0)
    if not _is_number(s.IOU_THRESHOLD) or not 0 <= s.IOU_THRESHOLD < 1:
        _refuse("MODEL.SSD.IOU_THRESHOLD", s.IOU_THRESHOLD,
                "an IoU in [0, 1) (a default box is positive when its IoU is > this)", "0.5")
    if not _is_number(s.NEG_POS_RATIO) or s.NEG_POS_RATIO < 0:
        _refuse("MODEL.SSD.NEG_POS_RATIO", s.NEG_POS_RATIO,
                "hard negatives kept per positive must be a number >= 0", "3")
    _check_numbers("MODEL.SSD.BBOX_REG_WEIGHTS", s.BBOX_REG_WEIGHTS, 4,
                   "four positive box-coding weights (wx, wy, ww, wh)",
                   "(10.0, 10.0, 5.0, 5.0)", lambda v: v > 0)
    if not _is_number(s.SCORE_THRESH_TEST) or not 0 <= s.SCORE_THRESH_TEST < 1:
        _refuse("MODEL.SSD.SCORE_THRESH_TEST", s.SCORE_THRESH_TEST,
                "a score in [0, 1) (1 or more would keep no detection)", "0.05")
    if not _is_int(s.TOPK_CANDIDATES_TEST) or s.TOPK_CANDIDATES_TEST < 1:
        _refuse("MODEL.SSD.TOPK_CANDIDATES_TEST", s.TOPK_CANDIDATES_TEST,
                "candidates per class must be an integer >= 1", "200")
    if not _is_number(s.NMS_THRESH_TEST) or not 0 < s.NMS_THRESH_TEST <= 1:
        _refuse("MODEL.SSD.NMS_THRESH_TEST", s.NMS_THRESH_TEST,
                "an IoU in (0, 1] (0 would keep one box per class)", "0.5")
    if not _is_int(s.DETECTIONS_PER_IMAGE) or (s.DETECTIONS_PER_IMAGE < 1
                                                and s.DETECTIONS_PER_IMAGE != -1):
        _refuse("MODEL.SSD.DETECTIONS_PER_IMAGE", s.DETECTIONS_PER_IMAGE,
                "deprecated: leave it at -1 and set TEST.DETECTIONS_PER_IMAGE", "-1")
    if not _is_int(cfg.TEST.DETECTIONS_PER_IMAGE) or cfg.TEST.DETECTIONS_PER_IMAGE < 1:
        _refuse("TEST.DETECTIONS_PER_IMAGE", cfg.TEST.DETECTIONS_PER_IMAGE,
                "detections kept per image must be an integer >= 1", "200")
    for key in ("CHANNELS_LAST", "FUSE_BN_INFERENCE", "ONEDNN_POST_OPS",
                "SPARSE_HEAD_BACKWARD", "WINOGRAD"):
        if not isinstance(s[key], bool):
            _refuse(f"MODEL.SSD.{key}", s[key], "must be True or False", "True")
    if s.INFERENCE_DTYPE not in ("float32", "bfloat16", "float16", "int8"):
        _refuse("MODEL.SSD.INFERENCE_DTYPE", s.INFERENCE_DTYPE,
                "must be 'float32', 'bfloat16', 'float16' or 'int8' (int8: with "
                "MODEL.SSD.INFERENCE_BACKEND onnxruntime or openvino)", "float32")
    check_fixed_size(cfg)


def check_fixed_size(cfg):
    """INPUT.FIXED_SIZE as (height, width) ints >= 1. (Whether the network can take that
    size with MODEL.SSD.STRIDES is checked when the model is built.)"""
    size = cfg.INPUT.FIXED_SIZE
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(
            _is_int(v) and v >= 1 for v in size):
        _refuse("INPUT.FIXED_SIZE", size, "(height, width): two positive integers",
                "(300, 300) or (1200, 1200)")
    return int(size[0]), int(size[1])


def check_input_config(cfg) -> None:
    """Refuse INPUT.FIXED_SIZE and INPUT.SSD.* values that cannot work (the loader calls
    this when it builds the augmentations).

    Raises:
        ValueError: naming the first bad key, with a good value.
    """
    check_fixed_size(cfg)
    if not isinstance(cfg.INPUT.SSD.CROP, bool):
        _refuse("INPUT.SSD.CROP", cfg.INPUT.SSD.CROP, "must be True or False", "True")
    if not isinstance(cfg.INPUT.SSD.SKIP_UNREADABLE_IMAGES, bool):
        _refuse("INPUT.SSD.SKIP_UNREADABLE_IMAGES", cfg.INPUT.SSD.SKIP_UNREADABLE_IMAGES,
                "must be True or False", "False")
    jitter = _check_numbers(
        "INPUT.SSD.COLOR_JITTER", cfg.INPUT.SSD.COLOR_JITTER, 4,
        "(brightness, contrast, saturation, hue): brightness, contrast and saturation >= 0, "
        "hue in [0, 0.5]", "(0.125, 0.5, 0.5, 0.05) or (0, 0, 0, 0) to disable it",
        lambda v: v >= 0)
    if jitter[3] > 0.5:
        _refuse("INPUT.SSD.COLOR_JITTER", cfg.INPUT.SSD.COLOR_JITTER,
                "the hue jitter (4th number) must be in [0, 0.5]", "(0.125, 0.5, 0.5, 0.05)")
    if cfg.INPUT.RANDOM_FLIP not in ("none", "horizontal"):
        _refuse("INPUT.RANDOM_FLIP", cfg.INPUT.RANDOM_FLIP,
                "the SSD augmentations flip horizontally or not at all", "horizontal")
