"""The SSD dataset mapper: Detectron2 dataset dicts -> model inputs at INPUT.FIXED_SIZE."""
import copy

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode, Instances

from .transforms import build_ssd_augmentations, cv2_float_preprocess, read_image_cv2, resize_impl

__all__ = ["SSDDatasetMapper"]


class SSDDatasetMapper:
    """Reads the image (INPUT.FORMAT, RGB for the reference weights), applies the SSD
    augmentations and returns ``{"image": uint8 (3, H, W), "instances": Instances, ...}``.

    With INPUT.RESIZE_IMPL "cv2-float", evaluation images are decoded and pre-processed as
    the MLPerf inference harness does (:func:`~ssd_r34.data.transforms.cv2_float_preprocess`):
    ``"image"`` is then float32 (3, H, W), already normalised, and ``"image_normalized"`` is
    True, so that the model does not normalise it again.

    In training, crowd annotations are ignored, boxes that the crop drops (centre outside)
    or that end up empty are removed, and an image left with no box returns None so that
    Detectron2's loader draws another one. Normalisation happens in the model.
    """

    @configurable
    def __init__(self, is_train: bool, *, augmentations, image_format: str = "RGB",
                 cv2_float=None):
        """``cv2_float``: None ("pil"), or ``(size, mean, std)`` of the MLPerf harness's
        pre-processing (evaluation only; mean / std in 0-1 units)."""
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.cv2_float = None if is_train else cv2_float

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        cv2_float = None
        if resize_impl(cfg) == "cv2-float":
            cv2_float = (tuple(cfg.INPUT.FIXED_SIZE),
                         np.asarray(cfg.MODEL.PIXEL_MEAN, dtype=np.float64) / 255.0,
                         np.asarray(cfg.MODEL.PIXEL_STD, dtype=np.float64) / 255.0)
        return {"is_train": is_train, "augmentations": build_ssd_augmentations(cfg, is_train),
                "image_format": cfg.INPUT.FORMAT, "cv2_float": cv2_float}

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        if self.cv2_float is not None:
            image = read_image_cv2(dataset_dict["file_name"])
            utils.check_image_size(dataset_dict, image)
            size, mean, std = self.cv2_float
            dataset_dict.pop("annotations", None)
            dataset_dict["image"] = torch.from_numpy(cv2_float_preprocess(
                image, size, mean, std, "BGR", self.image_format))
            dataset_dict["image_normalized"] = True
            return dataset_dict
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        annos = [a for a in dataset_dict.pop("annotations", []) if a.get("iscrowd", 0) == 0]
        boxes = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                          for a in annos], dtype=np.float64).reshape(-1, 4)
        aug_input = T.AugInput(image, boxes=boxes)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        h, w = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            return dataset_dict

        boxes = transforms.apply_box(boxes) if len(boxes) else boxes
        boxes = boxes.clip(0, [w, h, w, h])
        keep = (boxes[:, 2] - boxes[:, 0] > 1e-5) & (boxes[:, 3] - boxes[:, 1] > 1e-5)
        if not keep.any():
            return None
        instances = Instances((h, w))
        instances.gt_boxes = Boxes(torch.as_tensor(boxes[keep], dtype=torch.float32))
        instances.gt_classes = torch.tensor([a["category_id"] for a in annos],
                                            dtype=torch.int64)[torch.from_numpy(keep)]
        dataset_dict["instances"] = instances
        return dataset_dict
