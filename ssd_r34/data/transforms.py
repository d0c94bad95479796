"""SSD augmentations as Detectron2 Augmentations / Transforms (the SSD paper's, as the MLPerf
training reference's ``SSDCropping`` and colour jitter), their config checks, and the MLPerf
inference harness's pre-processing (INPUT.RESIZE_IMPL "cv2-float")."""
import functools

import cv2
import numpy as np
from PIL import Image
from torchvision.transforms import ColorJitter
from torchvision.transforms import functional as TF

from detectron2.data import transforms as T
from fvcore.transforms.transform import NoOpTransform, Transform

from ..layers import check_fixed_size, check_numbers, refuse

__all__ = ["SSDCropTransform", "SSDRandomCrop", "RandomColorJitter", "check_input_config",
           "build_ssd_augmentations", "RESIZE_IMPLS", "resize_impl", "read_image_cv2",
           "cv2_float_params", "cv2_float_preprocess", "cv2_float_preprocess_from_cfg"]

RESIZE_IMPLS = ("pil", "cv2-float")


class SSDCropTransform(Transform):
    """Crop to the float rectangle (x0, y0, x1, y1), the image cut at the integer parts as the
    reference does. A box whose centre is not strictly inside becomes (0, 0, 0, 0), to be
    filtered out; the others are clipped to the rectangle."""

    def __init__(self, x0: float, y0: float, x1: float, y1: float):
        super().__init__()
        self._set_attributes(locals())
        self.ix0, self.iy0, self.ix1, self.iy1 = int(x0), int(y0), int(x1), int(y1)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return img[self.iy0:self.iy1, self.ix0:self.ix1]

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return np.asarray(coords, dtype=np.float64) - [self.ix0, self.iy0]

    def centre_inside(self, boxes: np.ndarray) -> np.ndarray:  # (B,) bool
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        return (cx > self.x0) & (cx < self.x1) & (cy > self.y0) & (cy < self.y1)

    def apply_box(self, box: np.ndarray) -> np.ndarray:
        box = np.asarray(box, dtype=np.float64).reshape(-1, 4)
        out = box.clip([self.x0, self.y0] * 2, [self.x1, self.y1] * 2) - [self.ix0, self.iy0] * 2
        out[~self.centre_inside(box)] = 0
        return out


def iou_with_rect(boxes: np.ndarray, rect) -> np.ndarray:  # (B,) IoUs of (B, 4) boxes
    rect = np.asarray(rect, dtype=np.float64)
    wh = np.clip(np.minimum(boxes[:, 2:], rect[2:]) - np.maximum(boxes[:, :2], rect[:2]), 0, None)
    inter = wh[:, 0] * wh[:, 1]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + (rect[2] - rect[0]) * (rect[3] - rect[1]) - inter)


class SSDRandomCrop(T.Augmentation):
    """The SSD IoU-constrained random crop. Draws one of 7 modes uniformly: keep the image;
    minimum IoU 0.1, 0.3, 0.5, 0.7, 0.9; or no constraint. A crop of w, h ~ U(0.3, 1) of the
    image with w/h in [0.5, 2] is accepted when every box's IoU with it is above the minimum
    and at least one box centre lies strictly inside; a failed attempt draws a new mode."""

    MODES = (None, 0.1, 0.3, 0.5, 0.7, 0.9, -np.inf)

    def __init__(self):  # an explicit signature for Augmentation's repr, "SSDRandomCrop()"
        super().__init__()

    def get_transform(self, image, boxes):
        h, w = image.shape[:2]
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return NoOpTransform()
        while True:
            min_iou = self.MODES[np.random.randint(len(self.MODES))]
            if min_iou is None:
                return NoOpTransform()
            sw = np.random.uniform(0.3, 1.0)
            sh = np.random.uniform(0.3, 1.0)
            if not 0.5 <= sw / sh <= 2.0:
                continue
            left = np.random.uniform(0, 1.0 - sw)
            top = np.random.uniform(0, 1.0 - sh)
            rect = (left * w, top * h, (left + sw) * w, (top + sh) * h)
            crop = SSDCropTransform(*rect)
            if (iou_with_rect(boxes, rect) > min_iou).all() and crop.centre_inside(boxes).any():
                return crop


def _jitter_image(img: np.ndarray, order, factors) -> np.ndarray:
    # torchvision's ColorJitter with drawn factors (brightness, contrast, saturation, hue).
    pil = Image.fromarray(img)
    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i in order:
        if factors[i] is not None:
            pil = adjust[i](pil, factors[i])
    return np.asarray(pil)


class RandomColorJitter(T.Augmentation):
    """Brightness, contrast, saturation and hue jitter in a random order, drawn as
    torchvision's ColorJitter draws them."""

    def __init__(self, brightness=0.125, contrast=0.5, saturation=0.5, hue=0.05):
        super().__init__()
        self._jitter = ColorJitter(brightness, contrast, saturation, hue)

    def get_transform(self, image):
        j = self._jitter
        order, b, c, s, h = j.get_params(j.brightness, j.contrast, j.saturation, j.hue)
        return T.ColorTransform(functools.partial(_jitter_image, order=order.tolist(),
                                                  factors=(b, c, s, h)))


def ssd_augmentations(*, size, is_train: bool, crop: bool = True, flip: bool = True,
                      color_jitter=(0.125, 0.5, 0.5, 0.05)):
    """The SSD augmentations (a list) from plain arguments (LazyConfig:
    ``LazyCall(ssd_augmentations)``): ``size`` INPUT.FIXED_SIZE, ``crop`` INPUT.SSD.CROP,
    ``flip`` INPUT.RANDOM_FLIP == "horizontal", ``color_jitter`` INPUT.SSD.COLOR_JITTER.
    Training: crop, flip, resize, jitter (the reference's order); evaluation: the resize."""
    resize = T.Resize((int(size[0]), int(size[1])))  # PIL bilinear, as the reference
    if not is_train:
        return [resize]
    augs = []
    if crop:
        augs.append(SSDRandomCrop())
    if flip:
        augs.append(T.RandomFlip(prob=0.5, horizontal=True, vertical=False))
    augs.append(resize)
    if any(v > 0 for v in color_jitter):
        augs.append(RandomColorJitter(*color_jitter))
    return augs


def check_input_config(cfg) -> None:
    """Refuse INPUT.FIXED_SIZE and INPUT.SSD.* values that cannot work.

    Raises:
        ValueError: naming the first bad key, with a good value.
    """
    check_fixed_size(cfg)
    for key, good in (("CROP", "True"), ("SKIP_UNREADABLE_IMAGES", "False")):
        if not isinstance(cfg.INPUT.SSD[key], bool):
            refuse(f"INPUT.SSD.{key}", cfg.INPUT.SSD[key], "must be True or False", good)
    jitter = check_numbers(
        "INPUT.SSD.COLOR_JITTER", cfg.INPUT.SSD.COLOR_JITTER, 4,
        "(brightness, contrast, saturation, hue): brightness, contrast and saturation >= 0, "
        "hue in [0, 0.5]", "(0.125, 0.5, 0.5, 0.05) or (0, 0, 0, 0) to disable it",
        lambda v: v >= 0)
    if jitter[3] > 0.5:
        refuse("INPUT.SSD.COLOR_JITTER", cfg.INPUT.SSD.COLOR_JITTER,
               "the hue jitter (4th number) must be in [0, 0.5]", "(0.125, 0.5, 0.5, 0.05)")
    if cfg.INPUT.RANDOM_FLIP not in ("none", "horizontal"):
        refuse("INPUT.RANDOM_FLIP", cfg.INPUT.RANDOM_FLIP,
               "the SSD augmentations flip horizontally or not at all", "horizontal")


def build_ssd_augmentations(cfg, is_train: bool):
    """:func:`ssd_augmentations` from the config, checked (:func:`check_input_config`)."""
    check_input_config(cfg)
    return ssd_augmentations(size=cfg.INPUT.FIXED_SIZE, is_train=is_train,
                             crop=cfg.INPUT.SSD.CROP,
                             flip=cfg.INPUT.RANDOM_FLIP == "horizontal",
                             color_jitter=tuple(cfg.INPUT.SSD.COLOR_JITTER))


def resize_impl(cfg) -> str:
    """INPUT.RESIZE_IMPL, checked ("cv2-float": the MLPerf harness's pre-processing)."""
    if cfg.INPUT.RESIZE_IMPL not in RESIZE_IMPLS:
        refuse("INPUT.RESIZE_IMPL", cfg.INPUT.RESIZE_IMPL, f"must be one of {RESIZE_IMPLS}",
               "pil")
    return cfg.INPUT.RESIZE_IMPL


def read_image_cv2(file_name: str) -> np.ndarray:
    """``cv2.imread`` (BGR uint8), as the MLPerf harness decodes (OpenCV and PIL differ in the
    last bit of JPEGs). FileNotFoundError when OpenCV cannot read the file."""
    image = cv2.imread(file_name)
    if image is None:
        raise FileNotFoundError(f"OpenCV cannot read the image {file_name!r} (missing, or not "
                                "an image format OpenCV decodes).")
    return image


def cv2_float_preprocess(image: np.ndarray, size, mean, std, input_format: str = "BGR",
                         output_format: str = "RGB") -> np.ndarray:
    """MLPerf's ssd-resnet34 pre-processing (mlcommons/inference,
    ``vision/classification_and_detection/python/dataset.py``, ``pre_process_coco_resnet34``):
    ``cv2.resize`` (INTER_LINEAR) of the float image, ``/ 255 - mean``, ``/ std``.

    Args:
        image: (H0, W0, 3) uint8 in ``input_format`` ("BGR" as cv2.imread gives, or "RGB").
        size: (H, W); mean, std: per channel, 0-1 units, ``output_format`` order.
    Returns:
        (3, H, W) float32, C-contiguous.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"Expected an (H, W, 3) image, got shape {image.shape}")
    img = np.asarray(image, dtype=np.float32)
    if input_format != output_format:
        img = np.ascontiguousarray(img[:, :, ::-1])  # a channel swap, as cv2.cvtColor
    img = cv2.resize(img, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)
    img = img / np.float32(255.0) - np.asarray(mean, dtype=np.float32)
    img = img / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def cv2_float_params(cfg):
    """``(size, mean, std)`` of :func:`cv2_float_preprocess`: INPUT.FIXED_SIZE and
    MODEL.PIXEL_MEAN / PIXEL_STD / 255 (the defaults give MLPerf's float32 constants)."""
    return (tuple(cfg.INPUT.FIXED_SIZE), np.asarray(cfg.MODEL.PIXEL_MEAN, np.float64) / 255.0,
            np.asarray(cfg.MODEL.PIXEL_STD, np.float64) / 255.0)


def cv2_float_preprocess_from_cfg(cfg, image: np.ndarray, input_format: str = "BGR") -> np.ndarray:
    """:func:`cv2_float_preprocess` with :func:`cv2_float_params` and INPUT.FORMAT."""
    return cv2_float_preprocess(image, *cv2_float_params(cfg), input_format, cfg.INPUT.FORMAT)
