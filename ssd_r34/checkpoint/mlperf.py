"""MLPerf SSD-ResNet34 checkpoints (the four file shapes of docs/checkpoints.md) -> ssd_r34's
(Detectron2's) layout, and torchvision's ImageNet ResNet-34 -> the backbone. The reference:
mlcommons/inference ``vision/classification_and_detection/python/models/ssd_r34.py``."""
import collections
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch

from .safe_load import CheckpointFormatError, first_items as _first, load_checkpoint_file

__all__ = ["MLPerfCheckpoint", "find_mlperf_checkpoint", "read_mlperf_checkpoint",
           "convert_mlperf_state_dict", "reference_key_shapes", "is_torchvision_resnet34",
           "convert_torchvision_resnet34"]

NUM_DEFAULTS = (4, 6, 6, 6, 4, 4)
SOURCE_CHANNELS = (256, 512, 512, 256, 256, 256)
# (in, mid, out) of the five extra blocks.
EXTRA_CHANNELS = ((256, 256, 512), (512, 256, 512), (512, 128, 256), (256, 128, 256),
                  (256, 128, 256))
# (reference prefix, torchvision stage, Detectron2 stage, blocks, in, out channels)
STAGES = (("model.layer1.4", "layer1", "res2", 3, 64, 64),
          ("model.layer1.5", "layer2", "res3", 4, 64, 128),
          ("model.layer2.0", "layer3", "res4", 6, 128, 256))
# Keys that say "this is an MLPerf SSD-R34 state dict" (after any "module." prefix).
SIGNATURE = ("model.layer1.0.weight", "additional_blocks.0.0.weight", "loc.0.weight",
             "conf.0.weight")


def _bn(prefix, c):
    return {f"{prefix}.{t}": (c,) for t in ("weight", "bias", "running_mean", "running_var")}


def reference_key_shapes(num_classes: int = 81) -> Dict[str, Tuple[int, ...]]:
    """Every state-dict key of the reference (``num_batches_tracked`` omitted) with its
    shape; ``num_classes`` includes background."""
    shapes = {"model.layer1.0.weight": (64, 3, 7, 7), **_bn("model.layer1.1", 64)}
    for prefix, _, _, blocks, cin, cout in STAGES:
        for i in range(blocks):
            p, c0 = f"{prefix}.{i}", (cin if i == 0 else cout)
            shapes.update({f"{p}.conv1.weight": (cout, c0, 3, 3), **_bn(f"{p}.bn1", cout),
                           f"{p}.conv2.weight": (cout, cout, 3, 3), **_bn(f"{p}.bn2", cout)})
            if i == 0 and cin != cout:
                shapes.update({f"{p}.downsample.0.weight": (cout, cin, 1, 1),
                               **_bn(f"{p}.downsample.1", cout)})
    for i, (cin, mid, cout) in enumerate(EXTRA_CHANNELS):
        p = f"additional_blocks.{i}"
        shapes.update({f"{p}.0.weight": (mid, cin, 1, 1), f"{p}.0.bias": (mid,),
                       f"{p}.2.weight": (cout, mid, 3, 3), f"{p}.2.bias": (cout,)})
    for head, k in (("loc", 4), ("conf", num_classes)):
        for i, (nd, c) in enumerate(zip(NUM_DEFAULTS, SOURCE_CHANNELS)):
            shapes[f"{head}.{i}.weight"] = (nd * k, c, 3, 3)
            shapes[f"{head}.{i}.bias"] = (nd * k,)
    return shapes


# Reference key -> ssd_r34 key, applied in order (heads keep their names; their channels
# are permuted by convert_mlperf_state_dict).
_RENAMES = [(re.compile(p), r) for p, r in (
    (r"^model\.layer1\.0\.", "backbone.stem.conv1."),
    (r"^model\.layer1\.1\.", "backbone.stem.conv1.norm."),
    *((rf"^{re.escape(prefix)}\.", f"backbone.{stage}.") for prefix, _, stage, *_ in STAGES),
    (r"\.bn([12])\.", r".conv\1.norm."),
    (r"\.downsample\.0\.", ".shortcut."),
    (r"\.downsample\.1\.", ".shortcut.norm."),
    (r"^additional_blocks\.(\d)\.0\.", r"backbone.extra\1.conv1."),
    (r"^additional_blocks\.(\d)\.2\.", r"backbone.extra\1.conv2."),
    (r"^(loc|conf)\.", r"head.\1."))]


def _d2_name(key: str) -> str:
    for pattern, replacement in _RENAMES:
        key = pattern.sub(replacement, key)
    return key


@dataclass
class MLPerfCheckpoint:
    """A validated reference state dict (no ``module.`` prefix, no num_batches_tracked)."""

    state_dict: Dict[str, torch.Tensor]
    layout: str  # what the file was, in words
    num_classes: int  # including background (81 for COCO)
    extra: Dict[str, Any] = field(default_factory=dict)  # other top-level entries (label_map)

    def describe(self) -> str:
        return (f"{self.layout}; {len(self.state_dict)} tensors; {self.num_classes} classes "
                f"({self.num_classes - 1} + background)")


def _split_container(obj, how: str):
    # (state dict candidate, layout words, other top-level entries) of a loaded object.
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        others = {k: v for k, v in obj.items() if k != "model"}
        return obj["model"], (f"{how}: a dict with a 'model' state dict and "
                              f"{sorted(map(str, others)) or 'nothing else'}"), others
    if isinstance(obj, dict):  # a bare state dict, or that of a pickled module tree
        return obj, how if how.startswith("a pickled") else f"{how}: a bare state dict", {}
    return None, f"{how}: a {type(obj).__name__}", {}


def find_mlperf_checkpoint(obj, how: str = "loaded",
                           num_classes: Optional[int] = None) -> Optional[MLPerfCheckpoint]:
    """Recognise and validate an MLPerf SSD-R34 state dict in a loaded object (``how``:
    what was read). Returns None when none of the reference's signature keys is there;
    raises :class:`CheckpointFormatError` when keys or shapes are wrong, or the class count
    differs from ``num_classes`` (foreground, as MODEL.SSD.NUM_CLASSES) where given."""
    sd, layout, others = _split_container(obj, how)
    if not isinstance(sd, dict) or not sd or not all(isinstance(k, str) for k in sd):
        return None
    if all(k.startswith("module.") for k in sd):
        sd = collections.OrderedDict((k[len("module."):], v) for k, v in sd.items())
        layout += ", with a 'module.' prefix on every key (DataParallel)"
    if not any(k in sd for k in SIGNATURE):
        return None
    sd = collections.OrderedDict((k, v) for k, v in sd.items()
                                 if not k.endswith(".num_batches_tracked"))
    # The class count from conf.0.weight; every shape is checked against it below.
    conf0 = sd.get("conf.0.weight")
    classes = conf0.shape[0] // NUM_DEFAULTS[0] if isinstance(conf0, torch.Tensor) \
        and conf0.dim() else 81
    expected = reference_key_shapes(classes)
    shape = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
             for k, v in sd.items()}
    problems = {"missing keys": [k for k in expected if k not in sd],
                "unexpected keys": [k for k in sd if k not in expected],
                "wrong shapes": [f"{k} {shape[k]} (expected {s})" for k, s in expected.items()
                                 if k in sd and shape[k] != s]}
    if any(problems.values()):
        raise CheckpointFormatError("\n  ".join(
            [f"not an MLPerf SSD-ResNet34 checkpoint ({layout}):"]
            + [f"{what}: {_first(keys)}" for what, keys in problems.items() if keys]))
    if num_classes is not None and classes != num_classes + 1:
        conf = [f"conf.{i}.weight {tuple(sd[f'conf.{i}.weight'].shape)}"
                for i in range(len(NUM_DEFAULTS))]
        raise CheckpointFormatError(
            f"class count mismatch ({layout}): the checkpoint has {classes} classes "
            f"({classes - 1} + background; {_first(conf, 2)}: {NUM_DEFAULTS[0]} default boxes x "
            f"{classes} classes), but the model expects MODEL.SSD.NUM_CLASSES = {num_classes} "
            f"({num_classes + 1} with background). Set MODEL.SSD.NUM_CLASSES {classes - 1}.")
    return MLPerfCheckpoint(sd, layout, classes, others)


def read_mlperf_checkpoint(path: str, num_classes: Optional[int] = None) -> MLPerfCheckpoint:
    """Read any of the four MLPerf file shapes, safely; see :func:`find_mlperf_checkpoint`."""
    obj, how = load_checkpoint_file(path)
    found = find_mlperf_checkpoint(obj, how, num_classes)
    if found is None:
        sd, layout, _ = _split_container(obj, how)
        first = _first(map(str, sd)) if isinstance(sd, dict) else "-"
        raise CheckpointFormatError(
            f"{path} is not an MLPerf SSD-ResNet34 checkpoint ({layout}): expected keys such "
            f"as {', '.join(SIGNATURE)} (optionally prefixed by 'module.'); its first keys "
            f"are: {first}")
    return found


def convert_mlperf_state_dict(ckpt: MLPerfCheckpoint) -> Dict[str, torch.Tensor]:
    """Reference state dict -> ssd_r34's. loc channel ``k*nd + a`` -> ``a*4 + k``; conf
    ``c*nd + a`` (background c = 0) -> ``a*(K+1) + c'``, c' = c - 1, background last (K)."""
    out = collections.OrderedDict()
    for key, t in ckpt.state_dict.items():
        m = re.fullmatch(r"(loc|conf)\.(\d)\.(weight|bias)", key)
        if m:
            nd = NUM_DEFAULTS[int(m[2])]
            k = 4 if m[1] == "loc" else ckpt.num_classes
            t = t.reshape(k, nd, *t.shape[1:])  # (k, nd, ...): reference order
            if m[1] == "conf":  # background (class 0) last
                t = torch.cat([t[1:], t[:1]], dim=0)
            t = t.transpose(0, 1).reshape(nd * k, *t.shape[2:])
        out[_d2_name(key)] = t.contiguous()
    return out


def is_torchvision_resnet34(sd) -> bool:
    """Whether ``sd`` has the keys of torchvision's ResNet-34 (BasicBlocks 3, 4, 6, 3), with
    or without a 'module.' prefix."""
    keys = {str(k).removeprefix("module.") for k in sd} if isinstance(sd, dict) else set()
    return {"conv1.weight", "bn1.weight"} <= keys and all(
        f"{s}.{n - 1}.conv2.weight" in keys and f"{s}.{n}.conv1.weight" not in keys
        and f"{s}.0.conv3.weight" not in keys
        for s, n in (("layer1", 3), ("layer2", 4), ("layer3", 6), ("layer4", 3)))


def convert_torchvision_resnet34(sd) -> Dict[str, torch.Tensor]:
    """torchvision ResNet-34 weights -> ssd_r34 backbone keys (stem, res2..res4; ``layer4``,
    ``fc`` and ``num_batches_tracked`` dropped)."""
    if not is_torchvision_resnet34(sd):
        raise CheckpointFormatError(
            "not a torchvision ResNet-34 state dict (expected conv1.weight, bn1.*, layer1.0-2, "
            f"layer2.0-3, layer3.0-5, layer4.0-2 BasicBlocks); its first keys are: {_first(sd)}")
    to_reference = {"conv1": "model.layer1.0", "bn1": "model.layer1.1",
                    **{tv: prefix for prefix, tv, *_ in STAGES}}
    shapes = reference_key_shapes()
    out = collections.OrderedDict()
    for key, t in sd.items():
        key = key.removeprefix("module.")
        first, _, rest = key.partition(".")
        if key.endswith(".num_batches_tracked") or first in ("layer4", "fc"):
            continue
        ref = f"{to_reference.get(first, first)}.{rest}"
        if tuple(t.shape) != shapes.get(ref):
            raise CheckpointFormatError(
                f"torchvision key {key} {tuple(t.shape)} does not fit ResNet-34 "
                f"(expected {shapes.get(ref)})")
        out[_d2_name(ref)] = t.detach()
    return out
