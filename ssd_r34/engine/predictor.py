"""SSDPredictor: Detectron2's DefaultPredictor for SSD (one image in, detections out)."""
import logging
from types import SimpleNamespace
from typing import Dict, List, Optional

import numpy as np
import torch

from detectron2.data import transforms as T
from detectron2.modeling import build_model

from ..checkpoint import SSDCheckpointer
from ..config import get_ssd_cfg, setup_cfg
from ..data import dataset_metadata, register_dataset_files
from ..data.transforms import build_ssd_augmentations, cv2_float_preprocess_from_cfg, resize_impl
from ..export import attach_backend

logger = logging.getLogger(__name__)


def setup_inference_cfg(config_file: str, opts=(), device: Optional[str] = None,
                        dataset_coco=None, dataset_voc=None):
    """The frozen config of an inference tool: ``config_file``, ``KEY VALUE`` overrides and
    the ``--dataset-coco`` / ``--dataset-voc`` entries, with those data sets registered;
    MODEL.DEVICE cpu (with a message) where the config asks for CUDA and there is none."""
    opts = list(opts or [])
    if device is not None:
        opts += ["MODEL.DEVICE", device]
    elif "MODEL.DEVICE" not in opts[::2] and not torch.cuda.is_available():
        probe = get_ssd_cfg()
        probe.merge_from_file(config_file)
        if probe.MODEL.DEVICE.startswith("cuda"):
            logger.warning("No CUDA device: running on the CPU (MODEL.DEVICE cpu).")
            opts += ["MODEL.DEVICE", "cpu"]
    cfg = setup_cfg(SimpleNamespace(config_file=config_file, opts=opts,
                                    dataset_coco=dataset_coco, dataset_voc=dataset_voc))
    register_dataset_files(cfg)
    return cfg


def test_metadata(cfg):
    """DATASETS.TEST[0]'s metadata with class names (:func:`ssd_r34.data.dataset_metadata`).

    Returns:
        detectron2.data.Metadata, or None (with a warning where a set is named) without such
        a registered set: classes are then the model's contiguous ids 0..K-1.
    """
    register_dataset_files(cfg)
    if not cfg.DATASETS.TEST:
        return None
    name = cfg.DATASETS.TEST[0]
    try:  # names are a convenience: inference goes on without them
        meta = dataset_metadata(name)
        problem = "is not a registered data set" if meta is None else ""
    except (OSError, ValueError, KeyError) as e:
        meta, problem = None, f"has no class names ({type(e).__name__}: {e})"
    if problem:
        logger.warning(
            f"DATASETS.TEST[0] {name!r} {problem}: classes are written as the model's contiguous "
            "ids 0..K-1. Name your set with --dataset-coco NAME JSON IMAGE_ROOT (or "
            "DATASETS.COCO) and DATASETS.TEST \"('NAME',)\".")
    return meta


class SSDPredictor:
    """Detectron2's ``DefaultPredictor`` with SSD's test pre-processing (INPUT.FORMAT,
    INPUT.FIXED_SIZE, INPUT.RESIZE_IMPL, as the evaluation mapper); detections come back on
    the original image.

    Args:
        cfg: a config; ``MODEL.WEIGHTS`` is loaded (a random model when empty, with a warning).
        image_format: channel order of the images given to ``__call__``: "BGR" (the
            default, as ``DefaultPredictor`` and ``cv2.imread``) or "RGB" (PIL,
            ``detectron2.data.detection_utils.read_image(path, format="RGB")``).
    """

    def __init__(self, cfg, image_format: str = "BGR"):
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.metadata = test_metadata(cfg)
        if cfg.MODEL.WEIGHTS:
            SSDCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        else:
            logger.warning("MODEL.WEIGHTS is empty: the predictor uses a randomly initialised "
                           "model (its detections mean nothing).")
        attach_backend(self.model, self.cfg)  # eval mode; MODEL.SSD.INFERENCE_BACKEND / DTYPE
        self.aug = build_ssd_augmentations(cfg, is_train=False)
        self.cv2_float = resize_impl(cfg) == "cv2-float"
        self.model_format = cfg.INPUT.FORMAT
        if image_format not in ("BGR", "RGB"):
            raise ValueError(f"image_format must be 'BGR' or 'RGB', got {image_format!r}")
        self.image_format = image_format

    def preprocess(self, original_image: np.ndarray) -> Dict:
        """(H, W, 3) uint8 image in ``image_format`` -> the model's input dict."""
        if original_image.ndim != 3 or original_image.shape[2] != 3:
            raise ValueError(f"Expected an (H, W, 3) image, got shape {original_image.shape}")
        image = original_image
        if self.image_format != self.model_format:
            image = image[:, :, ::-1]
        height, width = image.shape[:2]
        if self.cv2_float:
            x = cv2_float_preprocess_from_cfg(self.cfg, original_image, self.image_format)
            return {"image": torch.from_numpy(x), "height": height, "width": width,
                    "image_normalized": True}
        image = T.apply_augmentations(self.aug, np.ascontiguousarray(image))[0]
        image = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return {"image": image, "height": height, "width": width}

    def __call__(self, original_image: np.ndarray) -> Dict:
        """Returns ``{"instances": Instances}`` with pred_boxes (XYXY, original pixels),
        scores and pred_classes (contiguous ids)."""
        return self.predict_batch([original_image])[0]

    def predict_batch(self, images: List[np.ndarray]) -> List[Dict]:
        """Several images in one forward pass (they share INPUT.FIXED_SIZE)."""
        with torch.no_grad():
            return self.model([self.preprocess(im) for im in images])
