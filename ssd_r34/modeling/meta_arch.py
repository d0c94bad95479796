"""The SSD meta-architecture: the matching rule, the loss with hard negative mining and the
inference of the MLPerf reference (Liu et al., "SSD: Single Shot MultiBox Detector", 2016,
section 2.2; mlcommons/training ``single_stage_detector/ssd``: ``Encoder`` and ``Loss``), as
batched tensor code. The speed options (MODEL.SSD.*) are described in ssd_r34/config.py.

Shapes: N images, R default boxes, G ground truths per image, K classes, A boxes per location.
"""
import contextlib
import copy
import functools
import itertools
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensorMode

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.structures import Boxes, ImageList, Instances

from ..layers import (are_numbers, check_fixed_size, fold_batch_norms, fuse_for_cpu,
                      is_exporting, is_int, is_number, onednn_fusion_available, refuse)
from .backbone import SSD_FEATURES
from .box_ops import hard_negative_mask, match_default_boxes
from .head import build_ssd_head
from .postprocessing import postprocess_single_image, rescale_detections

# "int8" runs the network in an engine (MODEL.SSD.INFERENCE_BACKEND, ssd_r34/export/);
# the PyTorch network of such a model (training, export, calibration) is float32.
INFERENCE_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16,
                    "int8": None}


def _positive_numbers(n=None):
    # A test of a value: a list or tuple of n (None: any number of) finite numbers > 0.
    return functools.partial(are_numbers, n=n, ok=lambda x: x > 0)


# (key, test of a value that works, what the value must be, a good value), checked in order.
MODEL_CHECKS = (
    ("MODEL.SSD.NUM_CLASSES", lambda v: is_int(v) and v >= 1,
     "the number of foreground classes must be an integer >= 1 (the background class is "
     "implicit)", "80 (COCO) or the data set's len(thing_classes)"),
    ("MODEL.SSD.DEFAULT_BOX_RATIOS",
     lambda v: isinstance(v, (list, tuple)) and len(v) == 6 and all(map(_positive_numbers(), v)),
     "6 lists (one per detection level) of positive aspect ratios",
     "[[2], [2, 3], [2, 3], [2, 3], [2], [2]]"),
    ("MODEL.SSD.DEFAULT_BOX_SIZES", _positive_numbers(7), "seven positive sizes in pixels of a "
     "300x300 image (one more than the six levels)", "[21, 45, 99, 153, 207, 261, 315]"),
    ("MODEL.SSD.IOU_THRESHOLD", lambda v: is_number(v) and 0 <= v < 1,
     "an IoU in [0, 1) (a default box is positive when its IoU is > this)", "0.5"),
    ("MODEL.SSD.NEG_POS_RATIO", lambda v: is_number(v) and v >= 0,
     "hard negatives kept per positive must be a number >= 0", "3"),
    ("MODEL.SSD.BBOX_REG_WEIGHTS", _positive_numbers(4),
     "four positive box-coding weights (wx, wy, ww, wh)", "(10.0, 10.0, 5.0, 5.0)"),
    ("MODEL.SSD.SCORE_THRESH_TEST", lambda v: is_number(v) and 0 <= v < 1,
     "a score in [0, 1) (1 or more would keep no detection)", "0.05"),
    ("MODEL.SSD.TOPK_CANDIDATES_TEST", lambda v: is_int(v) and v >= 1,
     "candidates per class must be an integer >= 1", "200"),
    ("MODEL.SSD.NMS_THRESH_TEST", lambda v: is_number(v) and 0 < v <= 1,
     "an IoU in (0, 1] (0 would keep one box per class)", "0.5"),
    ("TEST.DETECTIONS_PER_IMAGE", lambda v: is_int(v) and v >= 1,
     "detections kept per image must be an integer >= 1", "200"),
    *((f"MODEL.SSD.{key}", lambda v: isinstance(v, bool), "must be True or False", "True")
      for key in ("CHANNELS_LAST", "FUSE_BN_INFERENCE", "ONEDNN_POST_OPS",
                  "SPARSE_HEAD_BACKWARD", "WINOGRAD")),
    ("MODEL.SSD.INFERENCE_DTYPE", lambda v: v in INFERENCE_DTYPES,
     "must be 'float32', 'bfloat16', 'float16' or 'int8' (int8: with "
     "MODEL.SSD.INFERENCE_BACKEND onnxruntime or openvino)", "float32"),
)


def check_model_config(cfg) -> None:
    """Refuse the values of :data:`MODEL_CHECKS` and INPUT.FIXED_SIZE that cannot work, with
    the key and an example of a good value. MODEL.SSD.STRIDES is checked by the backbone
    (``check_strides``), INPUT.FIXED_SIZE against the strides by the model.

    Raises:
        ValueError: naming the first bad key.
    """
    for key, ok, need, example in MODEL_CHECKS:
        value = functools.reduce(getattr, key.split("."), cfg)
        if not ok(value):
            refuse(key, value, need, example)
    check_fixed_size(cfg)


def flatten_predictions(maps: List[Tensor], k: int) -> Tensor:
    """
    Args:
        maps: per level (N, A*k, h, w), anchor-major channels; k: values per box.
    Returns:
        (N, R, k), R = sum of A*h*w, box index ``a*h*w + y*w + x`` within a level (the
        reference's box order).
    """
    out = []
    for x in maps:
        n, _, h, w = x.shape
        out.append(x.view(n, -1, k, h, w).permute(0, 1, 3, 4, 2).reshape(n, -1, k))
    return torch.cat(out, dim=1)


@META_ARCH_REGISTRY.register()
class SSD(DenseDetector):
    """SSD-ResNet34 (MLPerf inference v0.5's ``ssd-resnet34`` 1200x1200 model). The SSD
    mappers resize images to INPUT.FIXED_SIZE; the default boxes follow the size the network
    gets (all images of a batch at one size)."""

    @configurable
    def __init__(self, *, backbone, head, anchor_generator, box2box_transform, num_classes,
                 input_size, iou_threshold=0.5, neg_pos_ratio=3, test_score_thresh=0.05,
                 test_topk_candidates=200, test_nms_thresh=0.5, max_detections_per_image=200,
                 channels_last=False, fuse_bn_inference=False, onednn_post_ops=False,
                 inference_dtype="float32", pixel_mean, pixel_std):
        super().__init__(backbone, head, list(SSD_FEATURES), pixel_mean=pixel_mean,
                         pixel_std=pixel_std)
        self.anchor_generator, self.box2box_transform = anchor_generator, box2box_transform
        self.num_classes = num_classes
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.iou_threshold, self.neg_pos_ratio = iou_threshold, neg_pos_ratio
        self.test_score_thresh, self.test_nms_thresh = test_score_thresh, test_nms_thresh
        self.test_topk_candidates = test_topk_candidates
        self.max_detections_per_image = max_detections_per_image
        self.channels_last, self.fuse_bn_inference = channels_last, fuse_bn_inference
        self.onednn_post_ops = onednn_post_ops
        if inference_dtype not in INFERENCE_DTYPES:
            raise ValueError(f"MODEL.SSD.INFERENCE_DTYPE must be one of "
                             f"{sorted(INFERENCE_DTYPES)}, got {inference_dtype!r}.")
        self.inference_dtype = INFERENCE_DTYPES[inference_dtype]
        # (key, tensors, folded backbone): a tuple, so not a submodule (neither in the state
        # dict nor moved by .to()); see _backbone_for_inference.
        self._folded_backbone: Optional[tuple] = None
        # Set by attach_backend (ssd_r34/export/): normalised images -> (loc, conf) run in
        # another engine at inference. Not a submodule.
        self.network_runner = None
        self._head_sizes: Dict[Tuple[int, int], List[Tuple[int, int]]] = {}
        self.head_output_sizes(self.input_size)  # fail early on a size the network can't take
        self._check_default_box_sizes()
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @classmethod
    def from_config(cls, cfg):
        check_model_config(cfg)  # a bad MODEL.SSD.* value: refused now, naming the key
        if cfg.MODEL.SSD.INFERENCE_DTYPE == "int8" and cfg.MODEL.SSD.INFERENCE_BACKEND == "pytorch":
            raise ValueError("MODEL.SSD.INFERENCE_DTYPE int8 runs the network in an engine: set "
                             "MODEL.SSD.INFERENCE_BACKEND onnxruntime or openvino and calibrate "
                             "with tools/calibrate.py (docs/int8.md).")
        backbone = build_backbone(cfg)
        shapes = [backbone.output_shape()[f] for f in SSD_FEATURES]
        anchor_generator = build_anchor_generator(cfg, shapes)
        s = cfg.MODEL.SSD
        return dict(
            backbone=backbone, head=build_ssd_head(cfg, shapes, anchor_generator.num_anchors),
            anchor_generator=anchor_generator,
            box2box_transform=Box2BoxTransform(weights=cfg.MODEL.SSD.BBOX_REG_WEIGHTS),
            num_classes=s.NUM_CLASSES, input_size=cfg.INPUT.FIXED_SIZE,
            iou_threshold=s.IOU_THRESHOLD, neg_pos_ratio=s.NEG_POS_RATIO,
            test_score_thresh=s.SCORE_THRESH_TEST, test_topk_candidates=s.TOPK_CANDIDATES_TEST,
            test_nms_thresh=s.NMS_THRESH_TEST,
            max_detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
            channels_last=s.CHANNELS_LAST, fuse_bn_inference=s.FUSE_BN_INFERENCE,
            onednn_post_ops=s.ONEDNN_POST_OPS, inference_dtype=s.INFERENCE_DTYPE,
            pixel_mean=cfg.MODEL.PIXEL_MEAN, pixel_std=cfg.MODEL.PIXEL_STD)

    def head_output_sizes(self, image_size=None) -> List[Tuple[int, int]]:
        """(h, w) of the six head outputs for an input of ``image_size`` (default: the
        configured INPUT.FIXED_SIZE), measured by running the network on shapes only."""
        H, W = image_size or self.input_size
        training = self.training
        self.train(False)  # BN in eval mode: the probe must not touch running statistics
        try:
            with torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True) as mode:
                x = mode.from_tensor(torch.empty(1, 3, int(H), int(W)))
                feats = self.backbone(x)
                locs, _ = self.head([feats[f] for f in self.head_in_features])
                return [tuple(int(s) for s in t.shape[-2:]) for t in locs]
        except RuntimeError as e:
            raise ValueError(
                f"An input of {H}x{W} is too small for MODEL.SSD.STRIDES: the network cannot "
                f"compute all six detection levels ({str(e).splitlines()[0]}). Use a larger "
                "INPUT.FIXED_SIZE or smaller strides (e.g. [1, 1, 2, 2, 2, 1] at 300x300)."
            ) from None
        finally:
            self.train(training)

    def _check_default_box_sizes(self):
        # Default boxes 0 pixels wide at INPUT.FIXED_SIZE (int(S * size / 300)) match nothing.
        H, W = self.input_size
        sizes = self.anchor_generator.box_sizes
        small = [s for s in sizes if int(s * min(H, W) / 300) < 1]
        if small:
            raise ValueError(
                f"MODEL.SSD.DEFAULT_BOX_SIZES {list(sizes)}: at INPUT.FIXED_SIZE ({H}, {W}) "
                f"the sizes {small} give default boxes 0 pixels wide (size x {min(H, W)} / 300 "
                "< 1). Use sizes >= 300 / min(INPUT.FIXED_SIZE) "
                f"(>= {300 / min(H, W):.3g} here), e.g. [21, 45, 99, 153, 207, 261, 315].")

    def num_boxes(self, image_size=None) -> int:
        """R, the default boxes for an input of ``image_size`` (e.g. 8732 at 300x300)."""
        sizes = self.head_output_sizes(image_size)
        return sum(h * w * a for (h, w), a in zip(sizes, self.anchor_generator.num_anchors))

    def preprocess_image(self, batched_inputs):
        """DenseDetector's, but inputs marked ``"image_normalized": True`` (INPUT.RESIZE_IMPL
        "cv2-float") are not normalised again; a batch is all marked or none."""
        marked = {bool(x.get("image_normalized", False)) for x in batched_inputs}
        if len(marked) > 1:
            raise ValueError("A batch mixes normalised (image_normalized) and raw images: "
                             "pre-process all its images one way (INPUT.RESIZE_IMPL).")
        if marked == {True}:
            images = ImageList.from_tensors(  # the backbone asks for no padding
                [self._move_to_current_device(x["image"]).float() for x in batched_inputs])
        else:
            images = super().preprocess_image(batched_inputs)
        sizes = set(images.image_sizes)
        if len(sizes) != 1:
            raise ValueError(f"SSD needs every image of a batch at one size, got {sorted(sizes)};"
                             " resize them to INPUT.FIXED_SIZE (the SSD dataset mappers do).")
        return images

    def _backbone_for_inference(self) -> nn.Module:
        """In eval mode without autograd (not exporting): a cached copy of the backbone with
        the BatchNorms folded (FUSE_BN_INFERENCE) and, on CPU in float32, oneDNN post-ops
        (ONEDNN_POST_OPS); else the backbone. The copy is rebuilt when a backbone tensor
        changed in place (version), was replaced or moved (address: the cache holds the old
        storages, so none is reused), or a module's mode changed."""
        if (self.training or not self.fuse_bn_inference or torch.is_grad_enabled()
                or is_exporting()):
            return self.backbone
        tensors = list(itertools.chain(self.backbone.parameters(), self.backbone.buffers()))
        # The oneDNN fusion is part of the copy: the key holds what decides it.
        key = ([(t.data_ptr(), t._version, t.dtype) for t in tensors],
               [m.training for m in self.backbone.modules()], self.inference_dtype,
               self.onednn_post_ops)
        if self._folded_backbone is None or self._folded_backbone[0] != key:
            with torch.inference_mode(False), torch.no_grad():
                folded = fold_batch_norms(copy.deepcopy(self.backbone)).requires_grad_(False)
                if (self.onednn_post_ops and self.inference_dtype is None and tensors
                        and tensors[0].device.type == "cpu"
                        and all(t.dtype == torch.float32 for t in tensors if t.is_floating_point())
                        and onednn_fusion_available()):
                    folded = fuse_for_cpu(folded)
            self._folded_backbone = (key, [t.detach() for t in tensors], folded)
        return self._folded_backbone[2]

    def train(self, mode: bool = True):
        if mode:
            self._folded_backbone = None  # rebuilt at the next inference; frees its memory
        return super().train(mode)

    def forward_network(self, images: Tensor):
        """Normalised (N, 3, H, W) images -> (loc (N, R, 4), conf (N, R, K+1), anchors (R, 4)),
        loc and conf in float32 whatever MODEL.SSD.INFERENCE_DTYPE is. With an engine attached
        (``network_runner``), inference runs the network there."""
        if self.network_runner is not None and not self.training and not is_exporting():
            size = tuple(int(s) for s in images.shape[-2:])
            if size not in self._head_sizes:
                self._head_sizes[size] = self.head_output_sizes(size)
            loc, conf = self.network_runner(images)
            sizes = self._head_sizes[size]
        else:
            if self.channels_last and not is_exporting():
                images = images.contiguous(memory_format=torch.channels_last)
            dtype = None if self.training else self.inference_dtype
            # Only ever enable autocast here: a disabled one would switch off the caller's
            # (the AMP trainers run the whole model under autocast).
            with (torch.autocast(images.device.type, dtype=dtype) if dtype is not None
                  else contextlib.nullcontext()):
                features = self._backbone_for_inference()(images)
                loc_maps, conf_maps = self.head([features[f] for f in self.head_in_features])
            loc = flatten_predictions(loc_maps, 4)
            conf = flatten_predictions(conf_maps, self.num_classes + 1)
            sizes = [x.shape[-2:] for x in loc_maps]
        anchors = self.anchor_generator(images.shape[-2:], sizes, device=images.device)
        return loc.float(), conf.float(), anchors

    def forward(self, batched_inputs: List[Dict[str, Tensor]]):
        """Mirrors detectron2.modeling.meta_arch.dense_detector.DenseDetector.forward, but
        the network runs in ``forward_network`` (a folded copy, an engine, autocast), not as
        ``self.backbone`` then ``self.head``; the rest is DenseDetector's hooks.

        Args:
            batched_inputs: N dicts in Detectron2's format: "image" (3, H, W) uint8 or
                float in INPUT.FORMAT at INPUT.FIXED_SIZE; in training "instances" with
                gt_boxes (G, 4) and gt_classes (G,); optionally "height", "width" of the
                original image.
        Returns:
            training: {"loss_box_reg", "loss_cls"} scalars. Inference: N dicts
            {"instances": Instances} with pred_boxes (M, 4) XYXY on the original image,
            scores (M,), pred_classes (M,).
        """
        images = self.preprocess_image(batched_inputs)
        predictions = self.forward_network(images.tensor)
        if self.training:
            if "instances" not in batched_inputs[0]:
                raise ValueError("Instance annotations are missing in training.")
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
            return self.forward_training(images, None, predictions, gt_instances)
        results = self.forward_inference(images, None, predictions)
        return [{"instances": rescale_detections(r, x.get("height", size[0]),
                                                 x.get("width", size[1]))}
                for r, x, size in zip(results, batched_inputs, images.image_sizes)]

    def forward_training(self, images, features, predictions, gt_instances):
        """DenseDetector's hook: :meth:`losses` of forward_network's ``predictions``."""
        return self.losses(*predictions, gt_instances)

    def forward_inference(self, images, features, predictions):
        """DenseDetector's hook: :meth:`inference`, at INPUT.FIXED_SIZE only: the network runs
        at any size, but detections at another than the trained one would quietly differ."""
        size = tuple(int(s) for s in images.tensor.shape[-2:])
        if size != self.input_size:
            raise ValueError(
                f"SSD got an image of {size[0]}x{size[1]} in inference, but it runs at "
                f"INPUT.FIXED_SIZE {self.input_size[0]}x{self.input_size[1]}: resize every image "
                "to exactly that size (aspect ratio not kept). Detectron2's DefaultPredictor "
                "resizes by the shortest edge instead: use ssd_r34.engine.SSDPredictor (same "
                "interface), or SSDDatasetMapper(cfg, is_train=False) for your own loader.")
        return self.inference(*predictions, size)

    def losses(self, loc: Tensor, conf: Tensor, anchors: Tensor,
               gt_instances: List[Instances]) -> Dict[str, Tensor]:
        """The reference's ``Loss``: smooth-L1 on positives, cross-entropy with hard
        negative mining.

        Args:
            loc: (N, R, 4); conf: (N, R, K+1); anchors: (R, 4) XYXY;
            gt_instances: N Instances with gt_boxes (G_i, 4) and gt_classes (G_i,).
        Returns:
            {"loss_box_reg", "loss_cls"}: scalars whose sum is the reference's loss, per
            image (loc + conf) / P (0 if P == 0), then the mean over images.
        """
        N, R = loc.shape[:2]
        G = max(max(len(x) for x in gt_instances), 1)
        gt_boxes = loc.new_zeros((N, G, 4))
        gt_classes = torch.full((N, G), self.num_classes, dtype=torch.long, device=loc.device)
        gt_valid = torch.zeros((N, G), dtype=torch.bool, device=loc.device)
        for i, inst in enumerate(gt_instances):
            n = len(inst)
            gt_boxes[i, :n] = inst.gt_boxes.tensor
            gt_classes[i, :n] = inst.gt_classes
            gt_valid[i, :n] = True

        with torch.no_grad():
            matched, positive = match_default_boxes(gt_boxes, gt_valid, anchors,
                                                    self.iou_threshold)
            labels = torch.where(positive, gt_classes.gather(1, matched),
                                 torch.full_like(matched, self.num_classes))
            matched_boxes = gt_boxes.gather(1, matched[..., None].expand(N, R, 4))
            deltas = self.box2box_transform.get_deltas(
                anchors.expand(N, R, 4).reshape(-1, 4), matched_boxes.reshape(-1, 4)
            ).view(N, R, 4)
            deltas = torch.where(positive[..., None], deltas, torch.zeros_like(deltas))

        loc, conf = loc.float(), conf.float()
        loc_loss = F.smooth_l1_loss(loc, deltas, beta=1.0, reduction="none").sum(dim=2)
        loc_loss = (loc_loss * positive).sum(dim=1)
        ce = F.cross_entropy(conf.reshape(N * R, -1), labels.reshape(-1),
                             reduction="none").view(N, R)
        negative = hard_negative_mask(ce, positive, self.neg_pos_ratio)
        conf_loss = (ce * (positive.to(ce.dtype) + negative.to(ce.dtype))).sum(dim=1)

        num_pos = positive.sum(dim=1)
        weight = (num_pos > 0).to(ce.dtype) / num_pos.to(ce.dtype).clamp(min=1e-6)
        return {"loss_box_reg": (loc_loss * weight).mean(), "loss_cls": (conf_loss * weight).mean()}

    def inference(self, loc: Tensor, conf: Tensor, anchors: Tensor,
                  image_size: Tuple[int, int]) -> List[Instances]:
        """The reference's ``decode_batch`` at the network's input size, one image at a time
        (:func:`postprocess_single_image`, which export traces). Boxes are not clipped.

        Args:
            loc: (N, R, 4); conf: (N, R, K+1); anchors: (R, 4); image_size: (H, W).
        Returns:
            N Instances of size (H, W) with pred_boxes (M, 4), scores (M,), pred_classes
            (M,), best score first, M <= TEST.DETECTIONS_PER_IMAGE.
        """
        results = []
        for i in range(loc.shape[0]):
            b, s, c = postprocess_single_image(self, loc[i:i + 1], conf[i:i + 1], anchors)
            results.append(Instances((int(image_size[0]), int(image_size[1])),
                                     pred_boxes=Boxes(b), scores=s, pred_classes=c))
        return results

    rescale = staticmethod(rescale_detections)
