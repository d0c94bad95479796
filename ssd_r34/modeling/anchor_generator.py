"""SSD default boxes (the SSD paper, section 2.2; the MLPerf reference's ``DefaultBoxes``),
from the head's actual output sizes and the image size, cached per size.

Shapes: R default boxes, A boxes per location, (H, W) input size, (h, w) a level's size.
"""
import math
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn
from torchvision.ops import box_convert

from detectron2.config import configurable
from detectron2.modeling.anchor_generator import ANCHOR_GENERATOR_REGISTRY


def default_box_sizes(box_sizes, ratios, level, image_size):
    """A (w, h) pairs, fractions of ``image_size`` (H, W), of the default boxes of ``level``
    in the reference's order: squares sk1 and sqrt(sk1 * sk2), then (r, 1/r) per ratio
    (``box_sizes``: DEFAULT_BOX_SIZES, ``ratios``: DEFAULT_BOX_RATIOS)."""
    H, W = image_size
    sk1 = int(box_sizes[level] * H / 300) / H
    sk2 = int(box_sizes[level + 1] * W / 300) / W
    sk3 = math.sqrt(sk1 * sk2)
    sizes = [(sk1, sk1), (sk3, sk3)]
    for r in ratios[level]:
        w, h = sk1 * math.sqrt(r), sk1 / math.sqrt(r)
        sizes += [(w, h), (h, w)]
    return sizes


@ANCHOR_GENERATOR_REGISTRY.register()
class SSDAnchorGenerator(nn.Module):
    """Default boxes of SSD, in the reference's order (the head's): levels in order; within
    a level ``a * h * w + y * w + x`` (box type major, then row, then column)."""

    @configurable
    def __init__(self, *, box_sizes: Sequence[float], aspect_ratios: Sequence[Sequence[float]]):
        super().__init__()
        if len(box_sizes) != len(aspect_ratios) + 1:
            raise ValueError(
                f"MODEL.SSD.DEFAULT_BOX_SIZES needs one more entry than "
                f"MODEL.SSD.DEFAULT_BOX_RATIOS has levels ({len(aspect_ratios)} levels): "
                f"got {len(box_sizes)} sizes.")
        self.box_sizes = list(box_sizes)
        self.aspect_ratios = [list(r) for r in aspect_ratios]
        self._cache: Dict[Tuple, torch.Tensor] = {}

    @classmethod
    def from_config(cls, cfg, input_shape=None):
        return {"box_sizes": cfg.MODEL.SSD.DEFAULT_BOX_SIZES,
                "aspect_ratios": cfg.MODEL.SSD.DEFAULT_BOX_RATIOS}

    @property
    def num_anchors(self) -> List[int]:
        """Default boxes per location, per level ([4, 6, 6, 6, 4, 4] for SSD-R34)."""
        return [2 + 2 * len(r) for r in self.aspect_ratios]

    def centre_form(self, image_size, feature_sizes) -> torch.Tensor:
        """(R, 4) float64 normalised (cx, cy, w, h), clamped to [0, 1], for ``image_size``
        (H, W) and per level ``feature_sizes`` (h, w)."""
        H, W = image_size
        levels = []
        for level, (fh, fw) in enumerate(feature_sizes):
            fk_h = H // int(H / fh)
            fk_w = W // int(W / fw)
            wh = torch.tensor(default_box_sizes(self.box_sizes, self.aspect_ratios, level,
                                                image_size), dtype=torch.float64)
            cy = (torch.arange(fh, dtype=torch.float64) + 0.5) / fk_h
            cx = (torch.arange(fw, dtype=torch.float64) + 0.5) / fk_w
            cy, cx = torch.meshgrid(cy, cx, indexing="ij")  # (fh, fw)
            shape = (len(wh), fh, fw, 2)
            boxes = torch.cat([torch.stack([cx, cy], dim=-1).expand(shape),
                               wh[:, None, None].expand(shape)], dim=-1)  # (A, fh, fw, 4)
            levels.append(boxes.reshape(-1, 4))
        return torch.cat(levels).clamp_(0, 1)

    def forward(self, image_size, feature_sizes, device=None) -> torch.Tensor:
        """
        Args:
            image_size: (H, W) of the network input; feature_sizes: per level (h, w) of
                the head outputs; device: where the boxes go.
        Returns:
            (R, 4) float32 XYXY default boxes in input pixels (cached per size and device).
        """
        image_size = (int(image_size[0]), int(image_size[1]))
        feature_sizes = tuple((int(h), int(w)) for h, w in feature_sizes)
        key = (image_size, feature_sizes, str(device))
        boxes = self._cache.get(key)
        if boxes is None:
            H, W = image_size
            # A normal tensor even when first asked for under torch.inference_mode(): the
            # cached boxes serve training as well.
            with torch.inference_mode(False), torch.no_grad():
                c = self.centre_form(image_size, feature_sizes).to(torch.float32)
                boxes = (box_convert(c, "cxcywh", "xyxy") * c.new_tensor([W, H, W, H])).to(device)
            self._cache[key] = boxes
        return boxes
