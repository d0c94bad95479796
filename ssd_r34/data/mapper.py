"""The SSD dataset mapper: Detectron2 dataset dicts -> model inputs at INPUT.FIXED_SIZE."""
import copy
import logging
from typing import Optional

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode, Instances

from .transforms import (build_ssd_augmentations, cv2_float_params, cv2_float_preprocess,
                         read_image_cv2, resize_impl)
from .validation import (MAX_LISTED, DatasetError, UnreadableImageError, check_annotations,
                         read_image)

__all__ = ["SSDDatasetMapper"]

logger = logging.getLogger(__name__)


class SSDDatasetMapper:
    """Reads the image (INPUT.FORMAT), applies the SSD augmentations and returns
    ``{"image": uint8 (3, H, W), "instances": Instances, ...}``; the model normalises.

    In training, crowd annotations are ignored, boxes the crop drops or leaves empty are
    removed, and an image left with no box gives None (the loader draws another). Bad data
    is named, never silently used (docs/validation.md). With INPUT.RESIZE_IMPL "cv2-float",
    evaluation images are pre-processed as the MLPerf harness does: ``"image"`` is float32,
    normalised, and ``"image_normalized"`` True.
    """

    @configurable
    def __init__(self, is_train: bool, *, augmentations, image_format: str = "RGB",
                 num_classes: Optional[int] = None, dataset_name: Optional[str] = None,
                 cv2_float=None):
        """
        Args:
            num_classes: class ids must be in [0, num_classes) (None: not checked).
            dataset_name: named in error messages.
            cv2_float: None ("pil"), or ``(size, mean, std)`` of the MLPerf harness's
                pre-processing (evaluation only; mean / std in 0-1 units).
        """
        self.is_train, self.augmentations = is_train, T.AugmentationList(augmentations)
        self.image_format, self.num_classes = image_format, num_classes
        self.dataset_name, self._dropped = dataset_name, 0
        self.cv2_float = None if is_train else cv2_float

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, dataset_name: Optional[str] = None):
        return {"is_train": is_train, "augmentations": build_ssd_augmentations(cfg, is_train),
                "image_format": cfg.INPUT.FORMAT, "num_classes": cfg.MODEL.SSD.NUM_CLASSES,
                "dataset_name": dataset_name,
                "cv2_float": cv2_float_params(cfg) if resize_impl(cfg) == "cv2-float" else None}

    def _valid_annotations(self, record, h, w):  # non-crowd, with a valid box
        annos, bad_ids, dropped = check_annotations(record, self.num_classes, w, h)
        if bad_ids:
            raise DatasetError(
                f"{bad_ids[0]} (MODEL.SSD.NUM_CLASSES {self.num_classes}). Set "
                "MODEL.SSD.NUM_CLASSES to the data set's class count or fix the id."
            ).in_dataset(self.dataset_name)
        where = f"data set '{self.dataset_name}': " if self.dataset_name else ""
        for d in dropped:
            self._dropped += 1
            if self._dropped <= MAX_LISTED:
                logger.warning(f"{where}dropped {d}; not repaired; {self._dropped} dropped so "
                               "far by this mapper.")
        return [a for a in annos if a.get("iscrowd", 0) == 0]

    def _read(self, dataset_dict):
        try:
            if self.cv2_float is None:
                image = read_image(dataset_dict["file_name"], format=self.image_format)
            else:
                image = read_image_cv2(dataset_dict["file_name"])
        except FileNotFoundError as e:  # from OpenCV
            raise UnreadableImageError(str(e), dataset_dict["file_name"], self.dataset_name)
        except UnreadableImageError as e:
            raise e.in_dataset(self.dataset_name)
        utils.check_image_size(dataset_dict, image)
        return image

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self._read(dataset_dict)
        annos = self._valid_annotations(dataset_dict, *image.shape[:2]) if self.is_train else []
        dataset_dict.pop("annotations", None)
        if self.cv2_float is not None:
            dataset_dict["image"] = torch.from_numpy(cv2_float_preprocess(
                image, *self.cv2_float, "BGR", self.image_format))
            dataset_dict["image_normalized"] = True
            return dataset_dict
        boxes = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                          for a in annos], dtype=np.float64).reshape(-1, 4)
        aug_input = T.AugInput(image, boxes=boxes)
        transforms = self.augmentations(aug_input)
        h, w = aug_input.image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(
            np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        if not self.is_train:
            return dataset_dict

        boxes = transforms.apply_box(boxes).clip(0, [w, h, w, h]) if len(boxes) else boxes
        keep = (boxes[:, 2] - boxes[:, 0] > 1e-5) & (boxes[:, 3] - boxes[:, 1] > 1e-5)
        if not keep.any():
            return None
        instances = Instances((h, w))
        instances.gt_boxes = Boxes(torch.as_tensor(boxes[keep], dtype=torch.float32))
        instances.gt_classes = torch.tensor([a["category_id"] for a in annos],
                                            dtype=torch.int64)[torch.from_numpy(keep)]
        dataset_dict["instances"] = instances
        return dataset_dict
