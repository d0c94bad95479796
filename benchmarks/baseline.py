"""The baseline the benchmarks compare ssd_r34 with: reference/reference_impl.py's MLPerf
algorithms and what a reference-style pipeline adds on top (docs/speed.md, "What is compared").
"""
import random

import torch
from PIL import Image
from torchvision import transforms as TV

import _common  # noqa: F401  (puts reference/ on sys.path)
from reference_impl import (ReferenceSSDR34, calc_iou_tensor, reference_decode,
                            reference_default_boxes, reference_encode, reference_loss)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class ReferenceSSDCropping:
    """The MLPerf ``SSDCropping`` on a PIL image with normalised ltrb boxes: one of 7 modes
    (keep; min IoU 0.1 .. 0.9; free), w, h ~ U(0.3, 1), w/h in [0.5, 2], every box's IoU with
    the crop above the minimum, boxes whose centre is strictly inside kept and clipped."""

    OPTIONS = (None, 0.1, 0.3, 0.5, 0.7, 0.9, -float("inf"))

    def __call__(self, img, img_size, bboxes, labels):
        while True:  # the reference tries one crop per drawn mode
            min_iou = random.choice(self.OPTIONS)
            if min_iou is None:
                return img, img_size, bboxes, labels
            htot, wtot = img_size
            w, h = random.uniform(0.3, 1.0), random.uniform(0.3, 1.0)
            if w / h < 0.5 or w / h > 2:
                continue
            left, top = random.uniform(0, 1.0 - w), random.uniform(0, 1.0 - h)
            right, bottom = left + w, top + h
            if not (calc_iou_tensor(bboxes, torch.tensor([[left, top, right, bottom]]))
                    > min_iou).all():
                continue
            xc = 0.5 * (bboxes[:, 0] + bboxes[:, 2])
            yc = 0.5 * (bboxes[:, 1] + bboxes[:, 3])
            masks = (xc > left) & (xc < right) & (yc > top) & (yc < bottom)
            if not masks.any():
                continue
            # the kept boxes (centre inside) clipped to the crop, in its normalised coordinates
            lo, hi = torch.tensor([left, top] * 2), torch.tensor([right, bottom] * 2)
            bboxes = (bboxes[masks].clamp(lo, hi) - lo) / torch.tensor([w, h] * 2)
            left_idx, top_idx = int(left * wtot), int(top * htot)
            right_idx, bottom_idx = int(right * wtot), int(bottom * htot)
            img = img.crop((left_idx, top_idx, right_idx, bottom_idx))
            return img, (bottom_idx - top_idx, right_idx - left_idx), bboxes, labels[masks]


class ReferenceTrainTransform:
    """One training sample as the reference's data loader makes it: read the file (PIL, RGB),
    SSD crop, flip (p = 0.5), resize to (H, W), colour jitter, ToTensor, Normalize, and
    (``encode=True``) the per-image target encoding against the default boxes.

    ``__call__(file_name, boxes_xyxy_pixels, labels)`` -> ``(image (3, H, W) float32,
    loc_target (A, 4), labels (A,))`` (the last two None without encoding).
    """

    def __init__(self, size, dboxes_xywh=None, encode=True):
        self.size = tuple(size)
        self.crop = ReferenceSSDCropping()
        self.dboxes = dboxes_xywh
        self.encode = encode and dboxes_xywh is not None
        self.img_trans = TV.Compose([
            TV.Resize(self.size),
            TV.ColorJitter(brightness=0.125, contrast=0.5, saturation=0.5, hue=0.05),
            TV.ToTensor(), TV.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)])

    def __call__(self, file_name, boxes, labels):
        img = Image.open(file_name).convert("RGB")
        w, h = img.size
        bboxes = torch.as_tensor(boxes, dtype=torch.float32) / torch.tensor([w, h, w, h])
        labels = torch.as_tensor(labels, dtype=torch.int64)
        img, (h, w), bboxes, labels = self.crop(img, (h, w), bboxes, labels)
        if random.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
            bboxes = bboxes[:, [2, 1, 0, 3]] * torch.tensor([-1.0, 1, -1, 1]) \
                + torch.tensor([1.0, 0, 1, 0])
        img = self.img_trans(img).contiguous()
        if not self.encode:
            return img, None, None
        loc, lab = reference_encode(bboxes, labels, self.dboxes)
        return img, loc, lab


def reference_train_step(model, images, gloc, glabel, dboxes_xywh):
    """Forward, the reference loss (double-sort hard negative mining) and backward.

    images (N, 3, H, W) normalised; gloc (N, 4, A) and glabel (N, A) from the per-image
    encoder (which the reference runs in its data loader). Returns the loss (detached)."""
    model.zero_grad(set_to_none=True)
    ploc, plabel = model(images)
    loss = reference_loss(ploc, plabel, gloc, glabel, dboxes_xywh)[0]
    loss.backward()
    return loss.detach()


def reference_postprocess(ploc, plabel, dboxes_xywh, original_sizes):
    """``reference_decode`` (softmax, per-class loop, greedy Python NMS), then the boxes
    scaled to each original (height, width) and clipped.
    Returns [(boxes (K, 4) pixels, labels 1..80, scores (K,))] per image."""
    results = reference_decode(ploc, plabel, dboxes_xywh)
    out = []
    for (boxes, labels, scores), (h, w) in zip(results, original_sizes):
        scale = torch.tensor([w, h, w, h], dtype=boxes.dtype)
        out.append(((boxes * scale).clamp(min=0).minimum(scale), labels, scores))
    return out


def reference_inference(model, images_uint8, dboxes_xywh, original_sizes):
    """End to end as the reference evaluates: ToTensor + Normalize of the resized uint8
    images (N, 3, H, W), forward, then ``reference_postprocess``."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    with torch.no_grad():
        x = (images_uint8.float() / 255 - mean) / std
        ploc, plabel = model(x)
        return reference_postprocess(ploc, plabel, dboxes_xywh, original_sizes)


@torch.no_grad()
def copy_weights_to_reference(ssd_model, ref_model):
    """Load ``ssd_model``'s (ssd_r34) weights into ``ref_model`` (ReferenceSSDR34): ssd_r34's
    own MLPerf conversion (``convert_mlperf_state_dict``: names, head channel order) run on
    tensors of element indices gives, for each ssd_r34 element, its place in the reference's."""
    from ssd_r34.checkpoint import MLPerfCheckpoint, convert_mlperf_state_dict

    target = {k: v for k, v in ref_model.state_dict().items()
              if not k.endswith("num_batches_tracked")}
    index = {k: torch.arange(v.numel()).reshape(v.shape) for k, v in target.items()}
    converted = convert_mlperf_state_dict(MLPerfCheckpoint(index, "indices",
                                                           ref_model.num_classes))
    ours, new = ssd_model.state_dict(), {}
    for rk, (ok, idx) in zip(index, converted.items()):
        new[rk] = torch.empty_like(target[rk])
        new[rk].view(-1)[idx.reshape(-1)] = ours[ok].reshape(-1)
        if ok.endswith("running_var"):  # BatchNorm's counter, as ssd_r34's
            new[rk[:-len("running_var")] + "num_batches_tracked"] = \
                ours[ok[:-len("running_var")] + "num_batches_tracked"]
    ref_model.load_state_dict(new)
    return ref_model


def reference_model(ssd_model, strides, size):
    """``ReferenceSSDR34`` (81 classes, ``strides``) holding ``ssd_model``'s weights, and its
    default boxes (xywh) at ``size``: (model, dboxes)."""
    ref = copy_weights_to_reference(ssd_model, ReferenceSSDR34(81, strides))
    return ref, reference_default_boxes(size, ref.head_output_sizes(size))
