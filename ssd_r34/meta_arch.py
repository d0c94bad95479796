"""The SSD meta-architecture: reference matching (spec section 5), loss with hard negative
mining (section 6) and inference (section 7), as batched tensor code.

Speed options (MODEL.SSD.*, see ssd_r34/config.py and README "Speed"):
CHANNELS_LAST runs the network in channels-last memory format; FUSE_BN_INFERENCE folds the
BatchNorms into the convolutions for inference without gradients (a cached copy of the
backbone, rebuilt whenever a weight changes), where ONEDNN_POST_OPS, on CPU in float32, also
runs the ReLUs and residual additions inside the convolutions; SPARSE_HEAD_BACKWARD (in the
head, ssd_r34/head.py) computes the head's gradients in CPU training from the locations the
loss reads; INFERENCE_DTYPE runs the network under autocast in bfloat16 / float16 at
inference (off by default). None of them changes the algorithm; all but the last keep
results within float32 rounding of the plain path (tests/test_speed_options.py).
"""
import contextlib
import copy
import itertools
import logging
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
import torchvision  # noqa: F401  (registers torch.ops.torchvision.nms)
from torch import Tensor, nn

from detectron2.config import configurable
from detectron2.layers import Conv2d, FrozenBatchNorm2d, batched_nms
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.structures import Boxes, Instances

from .backbone import SSD_FEATURES
from .export import is_exporting
from .head import build_ssd_head
from .onednn import fuse_for_cpu, onednn_fusion_available

logger = logging.getLogger(__name__)

INFERENCE_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _foldable_norm(norm) -> bool:
    if isinstance(norm, FrozenBatchNorm2d):
        return True
    return (isinstance(norm, nn.modules.batchnorm._BatchNorm) and not norm.training
            and norm.running_mean is not None and norm.running_var is not None)


@torch.no_grad()
def fold_batch_norms(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm (BN, SyncBN, FrozenBN) that follows a Detectron2
    ``Conv2d`` into the convolution's weight and bias, in place; returns ``module``.

    ``conv(x, w) * s + (beta - mean * s)`` with ``s = gamma / sqrt(var + eps)`` becomes
    ``conv(x, w * s) + (beta - mean * s)``, computed in float64 and rounded once. The new
    weights keep the old memory format (channels-last stays channels-last). Norms that
    cannot be folded (training mode, GroupNorm ...) are left in place."""
    for conv in module.modules():
        if not isinstance(conv, Conv2d) or not _foldable_norm(getattr(conv, "norm", None)):
            continue
        norm = conv.norm
        var = norm.running_var.double()
        gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(var)
        beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(var)
        scale = gamma * torch.rsqrt(var + norm.eps)
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(var)
        weight = torch.empty_like(conv.weight)  # same dtype, device and memory format
        weight.copy_(conv.weight.double() * scale.view(-1, 1, 1, 1))
        conv.weight = nn.Parameter(weight, requires_grad=False)
        conv.bias = nn.Parameter(((bias - norm.running_mean.double()) * scale + beta).to(
            weight.dtype), requires_grad=False)
        conv.norm = None
    return module


def flatten_predictions(maps: List[Tensor], k: int) -> Tensor:
    """Per-level (N, A*k, h, w) anchor-major maps -> (N, sum A*h*w, k), box index
    ``a*h*w + y*w + x`` within a level (the reference's box order)."""
    out = []
    for x in maps:
        n, _, h, w = x.shape
        out.append(x.view(n, -1, k, h, w).permute(0, 1, 3, 4, 2).reshape(n, -1, k))
    return torch.cat(out, dim=1)


def batched_pairwise_iou(gt: Tensor, anchors: Tensor) -> Tensor:
    """IoU of (N, G, 4) boxes with (R, 4) boxes, XYXY -> (N, G, R)."""
    lt = torch.max(gt[:, :, None, :2], anchors[None, None, :, :2])
    rb = torch.min(gt[:, :, None, 2:], anchors[None, None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_gt = (gt[..., 2] - gt[..., 0]) * (gt[..., 3] - gt[..., 1])
    area_a = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    return inter / (area_gt[:, :, None] + area_a[None, None] - inter)


def match_default_boxes(gt_boxes: Tensor, gt_valid: Tensor, anchors: Tensor,
                        iou_threshold: float) -> Tuple[Tensor, Tensor]:
    """The reference matching rule, batched over images.

    Args:
        gt_boxes: (N, G, 4) ground-truth boxes, padded; gt_valid: (N, G) bool.
        anchors: (R, 4) default boxes.
    Returns:
        matched (N, R) index of the ground truth each default box takes, and
        positive (N, R) bool. Each ground truth's best default box is forced to it
        (IoU 2.0); where several ground truths share a best box, the last one wins.
    """
    iou = batched_pairwise_iou(gt_boxes, anchors)
    iou = torch.where(gt_valid[:, :, None], iou, iou.new_tensor(-1.0))
    best_iou, matched = iou.max(dim=1)  # (N, R): first ground truth on ties
    best_box = iou.argmax(dim=2)  # (N, G): first default box on ties
    j = torch.arange(gt_boxes.shape[1], device=gt_boxes.device).expand_as(best_box)
    j = torch.where(gt_valid, j, torch.full_like(j, -1))
    forced = torch.full_like(matched, -1).scatter_reduce(1, best_box, j, reduce="amax")
    is_forced = forced >= 0
    matched = torch.where(is_forced, forced, matched)
    positive = is_forced | (best_iou > iou_threshold)
    return matched, positive


def hard_negative_mask(ce: Tensor, positive: Tensor, neg_pos_ratio: int) -> Tensor:
    """The k = min(ratio * P, R) boxes with the largest loss after zeroing positives,
    per image: one sort (the reference sorts twice to rank) and a scatter.

    Why a full sort rather than ``topk(k_max)``: k differs per image and lives on the
    device; ``topk`` needs k_max as a Python int, i.e. a host-device synchronisation every
    step on a GPU, to save a sort of R (8732 to 25276) numbers per image, which costs about
    a millisecond a batch on CPU (under 0.1% of a training step). Ties do not matter: tied
    boxes have the same loss, so the sum is the same whichever of them is taken.
    """
    num_boxes = ce.shape[1]
    k = (positive.sum(dim=1) * neg_pos_ratio).clamp(max=num_boxes)
    loss = ce.detach().masked_fill(positive, 0)
    order = loss.argsort(dim=1, descending=True)
    selected = torch.arange(num_boxes, device=ce.device)[None] < k[:, None]
    return torch.zeros_like(positive).scatter(1, order, selected)


def _nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    # torchvision.ops.nms without its Python-side checks: called once per class and image.
    return torch.ops.torchvision.nms(boxes, scores, iou_threshold)


def per_class_nms(boxes: Tensor, scores: Tensor, classes: Tensor, counts: Tensor,
                  iou_threshold: float) -> Tensor:
    """NMS within each class of one image; returns the kept indices, best score first.

    ``boxes``, ``scores``, ``classes`` are grouped by class (``counts[c]`` entries of class
    c, in class order). On CPU, one ``torchvision.ops.nms`` per class on its slice: no
    masks or gathers per class (torchvision's ``batched_nms`` loops over classes with a
    mask and a gather each, on CPU above 1000 boxes). On other devices, ``batched_nms``
    (one kernel with boxes offset per class)."""
    if boxes.device.type != "cpu":
        return batched_nms(boxes, scores, classes, iou_threshold)
    keep, start = [], 0
    for n in counts.tolist():
        if n == 1:
            keep.append(torch.tensor([start]))
        elif n:
            keep.append(_nms(boxes[start:start + n], scores[start:start + n],
                             iou_threshold) + start)
        start += n
    if not keep:
        return torch.zeros(0, dtype=torch.long)
    keep = torch.cat(keep)
    return keep[scores[keep].argsort(descending=True, stable=True)]


@META_ARCH_REGISTRY.register()
class SSD(DenseDetector):
    """SSD-ResNet34 (MLPerf), see the spec.

    Images are resized to INPUT.FIXED_SIZE by the SSD mappers; the default boxes follow the
    size the network actually gets (all images of a batch at one size).
    """

    @configurable
    def __init__(self, *, backbone, head, anchor_generator, box2box_transform, num_classes,
                 input_size, iou_threshold=0.5, neg_pos_ratio=3, test_score_thresh=0.05,
                 test_topk_candidates=200, test_nms_thresh=0.5, max_detections_per_image=200,
                 channels_last=False, fuse_bn_inference=False, onednn_post_ops=False,
                 inference_dtype="float32",
                 pixel_mean, pixel_std):
        super().__init__(backbone, head, list(SSD_FEATURES), pixel_mean=pixel_mean,
                         pixel_std=pixel_std)
        self.anchor_generator = anchor_generator
        self.box2box_transform = box2box_transform
        self.num_classes = num_classes
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.iou_threshold = iou_threshold
        self.neg_pos_ratio = neg_pos_ratio
        self.test_score_thresh = test_score_thresh
        self.test_topk_candidates = test_topk_candidates
        self.test_nms_thresh = test_nms_thresh
        self.max_detections_per_image = max_detections_per_image
        self.channels_last = channels_last
        self.fuse_bn_inference = fuse_bn_inference
        self.onednn_post_ops = onednn_post_ops
        if inference_dtype not in INFERENCE_DTYPES:
            raise ValueError(f"MODEL.SSD.INFERENCE_DTYPE must be one of "
                             f"{sorted(INFERENCE_DTYPES)}, got {inference_dtype!r}.")
        self.inference_dtype = INFERENCE_DTYPES[inference_dtype]
        # ([(tensor, version)], module modes, backbone with BatchNorms folded): a tuple, so
        # not a submodule: neither in the state dict nor moved by .to() (see
        # _backbone_for_inference for how it notices changes of the weights).
        self._folded_backbone: Optional[tuple] = None
        self.head_output_sizes(self.input_size)  # fail early on a size the network can't take
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        shapes = [backbone.output_shape()[f] for f in SSD_FEATURES]
        anchor_generator = build_anchor_generator(cfg, shapes)
        if len(anchor_generator.num_anchors) != len(shapes):
            raise ValueError(f"MODEL.SSD.DEFAULT_BOX_RATIOS must have {len(shapes)} levels.")
        return {
            "backbone": backbone,
            "head": build_ssd_head(cfg, shapes, anchor_generator.num_anchors),
            "anchor_generator": anchor_generator,
            "box2box_transform": Box2BoxTransform(weights=cfg.MODEL.SSD.BBOX_REG_WEIGHTS),
            "num_classes": cfg.MODEL.SSD.NUM_CLASSES,
            "input_size": cfg.INPUT.FIXED_SIZE,
            "iou_threshold": cfg.MODEL.SSD.IOU_THRESHOLD,
            "neg_pos_ratio": cfg.MODEL.SSD.NEG_POS_RATIO,
            "test_score_thresh": cfg.MODEL.SSD.SCORE_THRESH_TEST,
            "test_topk_candidates": cfg.MODEL.SSD.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": cfg.MODEL.SSD.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.MODEL.SSD.DETECTIONS_PER_IMAGE,
            "channels_last": cfg.MODEL.SSD.CHANNELS_LAST,
            "fuse_bn_inference": cfg.MODEL.SSD.FUSE_BN_INFERENCE,
            "onednn_post_ops": cfg.MODEL.SSD.ONEDNN_POST_OPS,
            "inference_dtype": cfg.MODEL.SSD.INFERENCE_DTYPE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    # ---- sizes -------------------------------------------------------------------------
    def head_output_sizes(self, image_size=None) -> List[Tuple[int, int]]:
        """(h, w) of the six head outputs for an input of ``image_size`` (default: the
        configured INPUT.FIXED_SIZE), measured by running the network on shapes only."""
        from torch._subclasses.fake_tensor import FakeTensorMode

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

    def num_boxes(self, image_size=None) -> int:
        """Default boxes for an input of ``image_size`` (e.g. 8732 at 300x300)."""
        sizes = self.head_output_sizes(image_size)
        return sum(h * w * a for (h, w), a in zip(sizes, self.anchor_generator.num_anchors))

    # ---- forward -----------------------------------------------------------------------
    def preprocess_image(self, batched_inputs):
        images = super().preprocess_image(batched_inputs)
        sizes = set(images.image_sizes)
        if len(sizes) != 1 or tuple(images.tensor.shape[-2:]) != next(iter(sizes)):
            raise ValueError(f"SSD needs every image of a batch at one size, got {sorted(sizes)};"
                             " resize them to INPUT.FIXED_SIZE (the SSD dataset mappers do).")
        return images

    def _backbone_for_inference(self) -> nn.Module:
        """The backbone to run now: in eval mode without autograd (and not while tracing or
        exporting), a cached copy with the BatchNorms folded into the convolutions
        (MODEL.SSD.FUSE_BN_INFERENCE) and, on CPU in float32, the ReLUs and residual additions
        fused into them as oneDNN post-ops (MODEL.SSD.ONEDNN_POST_OPS, ssd_r34/onednn.py);
        otherwise the backbone itself.

        The copy is rebuilt when any backbone tensor changed since it was made: in place
        (version counter), replaced or moved (storage address; the cache holds the old
        storages, so a new one cannot reuse their address) or a module's mode changed."""
        if (self.training or not self.fuse_bn_inference or torch.is_grad_enabled()
                or is_exporting()):
            return self.backbone
        tensors = list(itertools.chain(self.backbone.parameters(), self.backbone.buffers()))
        # The oneDNN fusion is part of the copy: the key holds what decides it.
        modes = (tuple(m.training for m in self.backbone.modules()), self.inference_dtype,
                 self.onednn_post_ops)
        cache = self._folded_backbone
        if (cache is None or cache[1] != modes or len(cache[0]) != len(tensors)
                or any(old.data_ptr() != t.data_ptr() or version != t._version
                       or old.dtype != t.dtype for (old, version), t in zip(cache[0], tensors))):
            with torch.inference_mode(False), torch.no_grad():
                folded = fold_batch_norms(copy.deepcopy(self.backbone)).requires_grad_(False)
                if (self.onednn_post_ops and self.inference_dtype is None and tensors
                        and tensors[0].device.type == "cpu"
                        and all(t.dtype == torch.float32 for t in tensors if t.is_floating_point())
                        and onednn_fusion_available()):
                    folded = fuse_for_cpu(folded)
            self._folded_backbone = cache = (
                [(t.detach(), t._version) for t in tensors], modes, folded)
        return cache[2]

    def train(self, mode: bool = True):
        if mode:
            self._folded_backbone = None  # rebuilt at the next inference; frees its memory
        return super().train(mode)

    def forward_network(self, images: Tensor):
        """Normalised (N, 3, H, W) images -> (loc (N, R, 4), conf (N, R, K+1), anchors (R, 4)).

        loc and conf are float32 whatever MODEL.SSD.INFERENCE_DTYPE is."""
        if self.channels_last and not is_exporting():
            images = images.contiguous(memory_format=torch.channels_last)
        dtype = None if self.training else self.inference_dtype
        # Only ever enable autocast here: a disabled one would switch off the caller's
        # (the AMP trainers run the whole model under autocast).
        with (torch.autocast(images.device.type, dtype=dtype) if dtype is not None
              else contextlib.nullcontext()):
            features = self._backbone_for_inference()(images)
            loc_maps, conf_maps = self.head([features[f] for f in self.head_in_features])
        anchors = self.anchor_generator(images.shape[-2:], [x.shape[-2:] for x in loc_maps],
                                        device=images.device)
        loc = flatten_predictions(loc_maps, 4)
        conf = flatten_predictions(conf_maps, self.num_classes + 1)
        return loc.float(), conf.float(), anchors

    def forward(self, batched_inputs: List[Dict[str, Tensor]]):
        images = self.preprocess_image(batched_inputs)
        loc, conf, anchors = self.forward_network(images.tensor)
        if self.training:
            if "instances" not in batched_inputs[0]:
                raise ValueError("Instance annotations are missing in training.")
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
            return self.losses(loc, conf, anchors, gt_instances)

        results = self.inference(loc, conf, anchors, images.tensor.shape[-2:])
        processed = []
        for r, inp, size in zip(results, batched_inputs, images.image_sizes):
            processed.append({"instances": self.rescale(r, inp.get("height", size[0]),
                                                        inp.get("width", size[1]))})
        return processed

    # ---- training ----------------------------------------------------------------------
    def losses(self, loc: Tensor, conf: Tensor, anchors: Tensor,
               gt_instances: List[Instances]) -> Dict[str, Tensor]:
        """Spec section 6. Returns loss_box_reg and loss_cls; their sum is the reference's
        loss: per image (loc + conf) / P (0 if P == 0), then the mean over images."""
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

        loc = loc.float()
        conf = conf.float()
        loc_loss = F.smooth_l1_loss(loc, deltas, beta=1.0, reduction="none").sum(dim=2)
        loc_loss = (loc_loss * positive).sum(dim=1)
        ce = F.cross_entropy(conf.reshape(N * R, -1), labels.reshape(-1),
                             reduction="none").view(N, R)
        negative = hard_negative_mask(ce, positive, self.neg_pos_ratio)
        conf_loss = (ce * (positive.to(ce.dtype) + negative.to(ce.dtype))).sum(dim=1)

        num_pos = positive.sum(dim=1)
        weight = (num_pos > 0).to(ce.dtype) / num_pos.to(ce.dtype).clamp(min=1e-6)
        return {"loss_box_reg": (loc_loss * weight).mean(), "loss_cls": (conf_loss * weight).mean()}

    # ---- inference ---------------------------------------------------------------------
    def decode_boxes(self, loc: Tensor, anchors: Tensor) -> Tensor:
        N, R = loc.shape[:2]
        return self.box2box_transform.apply_deltas(
            loc.reshape(-1, 4), anchors.expand(N, R, 4).reshape(-1, 4)).view(N, R, 4)

    def inference(self, loc: Tensor, conf: Tensor, anchors: Tensor,
                  image_size: Tuple[int, int]) -> List[Instances]:
        """Spec section 7 at the network's input size: softmax, per class the best
        TOPK_CANDIDATES_TEST boxes with score > SCORE_THRESH_TEST, per-class NMS, then the
        best DETECTIONS_PER_IMAGE. Boxes are not clipped here.

        The candidates of all images and classes are selected at once: threshold, one sort
        by (image, class, score), a rank within each (image, class) group. NMS then runs per
        group on contiguous slices (``per_class_nms``). Only the candidates' boxes are
        decoded."""
        N = loc.shape[0]
        K = self.num_classes
        scores = F.softmax(conf.float(), dim=2)[..., :K]
        img, box, cls = (scores > self.test_score_thresh).nonzero(as_tuple=True)
        s = scores[img, box, cls]
        group = img * K + cls
        order = s.argsort(descending=True)
        order = order[group[order].argsort(stable=True)]  # by group, best score first
        counts = torch.bincount(group, minlength=N * K)
        rank = torch.arange(len(order), device=order.device) - (counts.cumsum(0) - counts)[
            group[order]]
        top = order[rank < self.test_topk_candidates]
        img, box, cls, s = img[top], box[top], cls[top], s[top]
        b = self.box2box_transform.apply_deltas(loc[img, box].float(), anchors[box])
        per_image = counts.clamp(max=self.test_topk_candidates).view(N, K)
        starts = [0] + per_image.sum(dim=1).cumsum(0).tolist()
        results = []
        for i in range(N):
            lo, hi = starts[i], starts[i + 1]
            keep = per_class_nms(b[lo:hi], s[lo:hi], cls[lo:hi], per_image[i],
                                 self.test_nms_thresh)[: self.max_detections_per_image] + lo
            r = Instances((int(image_size[0]), int(image_size[1])))
            r.pred_boxes = Boxes(b[keep])
            r.scores = s[keep]
            r.pred_classes = cls[keep]
            results.append(r)
        return results

    @staticmethod
    def rescale(r: Instances, height: int, width: int) -> Instances:
        """Scale to the original image by (width / W, height / H), then clip (the reference
        clips only at this point and drops nothing)."""
        H, W = r.image_size
        out = Instances((height, width))
        boxes = r.pred_boxes.tensor * r.pred_boxes.tensor.new_tensor(
            [width / W, height / H, width / W, height / H])
        out.pred_boxes = Boxes(boxes)
        out.pred_boxes.clip((height, width))
        out.scores = r.scores
        out.pred_classes = r.pred_classes
        return out
