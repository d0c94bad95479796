"""SSDPredictor: Detectron2's DefaultPredictor for SSD (one image in, detections out)."""
import logging
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

__all__ = ["SSDPredictor", "setup_inference_cfg", "test_metadata"]


def setup_inference_cfg(config_file: str, opts=(), device: Optional[str] = None,
                        dataset_coco=None, dataset_voc=None):
    """A frozen config for the inference tools: ``config_file`` + ``KEY VALUE`` overrides,
    with the data sets of DATASETS.COCO / DATASETS.VOC registered.

    ``MODEL.DEVICE`` falls back to cpu (with a message) when the config asks for CUDA on a
    machine without it, so that the COCO configs run as they are on a laptop.
    ``dataset_coco`` / ``dataset_voc``: the tools' ``--dataset-coco`` / ``--dataset-voc``
    entries, appended to DATASETS.COCO / DATASETS.VOC."""
    from argparse import Namespace

    opts = list(opts or [])
    if device is not None:
        opts += ["MODEL.DEVICE", device]
    elif "MODEL.DEVICE" not in opts[::2] and not torch.cuda.is_available():
        probe = get_ssd_cfg()
        probe.merge_from_file(config_file)
        if probe.MODEL.DEVICE.startswith("cuda"):
            logger.warning("No CUDA device: running on the CPU (MODEL.DEVICE cpu).")
            opts += ["MODEL.DEVICE", "cpu"]
    cfg = setup_cfg(Namespace(config_file=config_file, opts=opts, dataset_coco=dataset_coco,
                              dataset_voc=dataset_voc))
    register_dataset_files(cfg)
    return cfg


def test_metadata(cfg):
    """The metadata of DATASETS.TEST[0] with its class names (read from its json's categories
    if it has not been loaded; see :func:`ssd_r34.data.dataset_metadata`), after registering
    DATASETS.COCO / DATASETS.VOC; None, with a warning when a name is given, when there is
    no such registered set: then classes are the model's contiguous ids 0..K-1.

    Args:
        cfg: a config.

    Returns:
        detectron2.data.Metadata or None.
    """
    register_dataset_files(cfg)
    if not cfg.DATASETS.TEST:
        return None
    name = cfg.DATASETS.TEST[0]
    try:
        meta = dataset_metadata(name)
    except (OSError, ValueError, KeyError) as e:  # names are a convenience: inference goes on
        logger.warning(f"DATASETS.TEST[0] {name!r}: no class names ({type(e).__name__}: {e}); "
                       "classes are the model's contiguous ids 0..K-1.")
        return None
    if meta is None:
        logger.warning(
            f"DATASETS.TEST[0] {name!r} is not a registered data set: no class names, and "
            "classes are written as the model's contiguous ids 0..K-1. Name your set with "
            "--dataset-coco NAME JSON IMAGE_ROOT (or DATASETS.COCO) and DATASETS.TEST "
            "\"('NAME',)\".")
    return meta


class SSDPredictor:
    """Like Detectron2's ``DefaultPredictor``, with SSD's test pre-processing: the image is
    converted to ``INPUT.FORMAT`` (RGB for the reference weights) and resized to exactly
    ``INPUT.FIXED_SIZE`` (bilinear, aspect ratio not kept), as the evaluation mapper does;
    the detections come back on the original image (scaled and clipped). With
    INPUT.RESIZE_IMPL "cv2-float" the resize and normalisation are the MLPerf harness's
    (float32 image, OpenCV bilinear; decoding is the caller's: use ``cv2.imread`` for MLPerf's).

    Args:
        cfg: a config; ``MODEL.WEIGHTS`` is loaded (a random model when empty, with a warning).
        image_format: channel order of the images given to ``__call__``: "BGR" (the
            default, as ``DefaultPredictor`` and ``cv2.imread``) or "RGB" (PIL,
            ``detectron2.data.detection_utils.read_image(path, format="RGB")``).

    Example::

        predictor = SSDPredictor(cfg, image_format="RGB")
        instances = predictor(read_image("photo.jpg", format="RGB"))["instances"]
    """

    def __init__(self, cfg, image_format: str = "BGR"):
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        self.metadata = test_metadata(cfg)
        if cfg.MODEL.WEIGHTS:
            SSDCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        else:
            logger.warning("MODEL.WEIGHTS is empty: the predictor uses a randomly initialised "
                           "model (its detections mean nothing).")
        # MODEL.SSD.INFERENCE_BACKEND / INFERENCE_DTYPE: the network in ONNX Runtime or
        # OpenVINO, float32 or INT8 (ssd_r34/inference/); "pytorch" leaves the model as it is.
        attach_backend(self.model, self.cfg)
        self.aug = T.AugmentationList(build_ssd_augmentations(cfg, is_train=False))
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
        aug_input = T.AugInput(np.ascontiguousarray(image))
        self.aug(aug_input)
        image = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        return {"image": image, "height": height, "width": width}

    def __call__(self, original_image: np.ndarray) -> Dict:
        """Returns ``{"instances": Instances}`` with pred_boxes (XYXY, original pixels),
        scores and pred_classes (contiguous ids)."""
        return self.predict_batch([original_image])[0]

    def predict_batch(self, images: List[np.ndarray]) -> List[Dict]:
        """Several images in one forward pass (they share INPUT.FIXED_SIZE)."""
        with torch.no_grad():
            return self.model([self.preprocess(im) for im in images])
