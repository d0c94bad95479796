"""Reading MLPerf SSD-ResNet34 checkpoints and torchvision ResNet-34 weights into ssd_r34.

The MLPerf reference (spec section 2) comes in four file shapes:

* a bare state dict;
* ``{"model": state_dict, "label_map": ...}`` (the seed's ``iter_N.pt``);
* either of those with a ``module.`` prefix on every key (saved from DataParallel);
* a pickled whole ``nn.Module`` (the released ``resnet34-ssd1200.pytorch``, class
  ``models.ssd_r34.SSD_R34``).

Files are read with ``torch.load(..., weights_only=True)``. Only when that refuses the file
is it read again with :class:`RestrictedUnpickler`, which admits tensors, storages and plain
containers, turns every module class (``models.*``, ``torch.nn.*``, ``torchvision.*``) into
an inert placeholder whose pickled state is only recorded, and refuses anything else (say
``os.system``) before it can run. The state dict is then rebuilt from the recorded
``_modules`` / ``_parameters`` / ``_buffers`` tree.

Conversion to ssd_r34's names (Detectron2's) also permutes the head channels: the reference
reads loc as (N, 4, nd*h*w) and conf as (N, 81, nd*h*w) (coordinate-major / class-major,
background first), ssd_r34 is anchor-major with background last.
"""
import collections
import logging
import os
import pickle
import re
import types
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch
from torch.nn.parallel import DistributedDataParallel

from detectron2.checkpoint import DetectionCheckpointer

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointFormatError", "UnsafeCheckpointError", "MLPerfCheckpoint", "RestrictedUnpickler",
    "restricted_load", "load_checkpoint_file", "module_state_dict", "find_mlperf_checkpoint",
    "read_mlperf_checkpoint", "convert_mlperf_state_dict", "reference_key_shapes",
    "is_torchvision_resnet34", "convert_torchvision_resnet34", "SSDCheckpointer",
]

NUM_DEFAULTS = (4, 6, 6, 6, 4, 4)
SOURCE_CHANNELS = (256, 512, 512, 256, 256, 256)
# (in, mid, out) of the five extra blocks.
EXTRA_CHANNELS = ((256, 256, 512), (512, 256, 512), (512, 128, 256), (256, 128, 256),
                  (256, 128, 256))
# (reference prefix, torchvision stage, Detectron2 stage, blocks, in, out channels)
STAGES = (("model.layer1.4", "layer1", "res2", 3, 64, 64),
          ("model.layer1.5", "layer2", "res3", 4, 64, 128),
          ("model.layer2.0", "layer3", "res4", 6, 128, 256))
BN_TENSORS = ("weight", "bias", "running_mean", "running_var")
# Keys that say "this is an MLPerf SSD-R34 state dict" (after any "module." prefix).
SIGNATURE = ("model.layer1.0.weight", "additional_blocks.0.0.weight", "loc.0.weight",
             "conf.0.weight")
MAX_LISTED = 5


class CheckpointFormatError(ValueError):
    """The file is not a (compatible) MLPerf SSD-ResNet34 / torchvision ResNet-34 checkpoint."""


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The file needs arbitrary unpickling (it references a global that is neither a tensor,
    a storage, a plain container nor a module class): refused, nothing was executed."""


# ---------------------------------------------------------------------------------------
# Restricted unpickling of whole pickled modules
# ---------------------------------------------------------------------------------------
class ModulePlaceholder:
    """Stands in for a pickled class (an ``nn.Module`` of the reference, of ``torch.nn`` or
    torchvision). Creating one runs no code of the original class; the pickled state is
    only recorded in ``_pickled_state`` (and constructor arguments in ``_pickled_args``)."""

    _pickled_global = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        object.__setattr__(obj, "_pickled_args", args)
        object.__setattr__(obj, "_pickled_state", None)
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        object.__setattr__(self, "_pickled_state", state)

    def __repr__(self):
        return f"<placeholder for {self._pickled_global}>"


# Module paths whose globals become placeholders (classes of the reference's module tree).
PLACEHOLDER_MODULES = ("models", "torch.nn.modules", "torch.nn.parallel", "torchvision")


def _rebuild_from_type_v2(func, new_type, args, state):
    # torch's own function, but only for plain tensors and parameters.
    if new_type not in (torch.Tensor, torch.nn.Parameter) or func not in _REBUILD_FUNCTIONS:
        raise UnsafeCheckpointError(
            f"refusing to rebuild a tensor of type {new_type!r} with {func!r}")
    return torch._tensor._rebuild_from_type_v2(func, new_type, args, state)


def _safe_reconstructor(cls, base, state):
    # copyreg._reconstructor (pickle protocols 0 and 1) for placeholders only.
    if not (isinstance(cls, type) and issubclass(cls, ModulePlaceholder) and base is object
            and state is None):
        raise UnsafeCheckpointError(f"refusing copyreg._reconstructor({cls!r}, {base!r}, ...)")
    return cls.__new__(cls)


def _thnn_backend():
    # PyTorch <= 1.0 pickled modules' ``_backend`` as this call; it has no meaning now.
    return None


_REBUILD_FUNCTIONS = tuple(
    getattr(torch._utils, name) for name in
    ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter",
     "_rebuild_parameter_with_state") if hasattr(torch._utils, name))


def _allowed_globals() -> Dict[Tuple[str, str], Any]:
    allowed = {("collections", "OrderedDict"): collections.OrderedDict,
               ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
               ("torch", "Size"): torch.Size, ("torch", "device"): torch.device,
               ("torch", "Tensor"): torch.Tensor, ("torch._tensor", "Tensor"): torch.Tensor,
               ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
               ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
               ("torch.tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
               ("copyreg", "_reconstructor"): _safe_reconstructor,
               ("torch.nn.backends.thnn", "_get_thnn_function_backend"): _thnn_backend}
    for f in _REBUILD_FUNCTIONS:
        allowed[("torch._utils", f.__name__)] = f
    for name in dir(torch):
        if isinstance(getattr(torch, name, None), torch.dtype):
            allowed[("torch", name)] = getattr(torch, name)
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a saved module tree of tensors needs:

    * tensor / parameter rebuild functions of ``torch._utils``, storages, ``torch.Size``,
      ``torch.device``, dtypes, ``collections.OrderedDict``, ``set``;
    * any global under ``models.*``, ``torch.nn.modules.*``, ``torch.nn.parallel.*``,
      ``torchvision.*``: an inert :class:`ModulePlaceholder` subclass (nothing is imported);

    and raises :class:`UnsafeCheckpointError` naming any other global, before it is used.
    Storages are resolved by ``torch.load``'s own persistent-id handling.
    """

    _allowed = None

    def find_class(self, module, name):
        import _compat_pickle

        # Python 2 names that protocol < 3 pickles carry (copy_reg, __builtin__ ...).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _allowed_globals()
        fn = self._allowed.get((module, name))
        if fn is not None:
            return fn
        if module == "torch" and name.endswith("Storage"):
            try:
                return torch.serialization.StorageType(name)
            except KeyError:
                pass
        if any(module == m or module.startswith(m + ".") for m in PLACEHOLDER_MODULES) \
                and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            cache = self.__dict__.setdefault("_placeholders", {})
            key = f"{module}.{name}"
            if key not in cache:
                cache[key] = type(name, (ModulePlaceholder,),
                                  {"_pickled_global": key, "__module__": __name__})
            return cache[key]
        raise UnsafeCheckpointError(
            f"refusing to unpickle the global '{module}.{name}': it is neither a tensor, a "
            "storage, a plain container nor a module class of an SSD-ResNet34 model, and "
            "loading it could run arbitrary code. Nothing was executed.")


def _restricted_pickle_module():
    mod = types.ModuleType("ssd_r34_restricted_pickle")
    mod.Unpickler = RestrictedUnpickler
    mod.load = lambda f, **kwargs: RestrictedUnpickler(f, **kwargs).load()
    mod.loads = lambda data, **kwargs: RestrictedUnpickler(
        __import__("io").BytesIO(data), **kwargs).load()
    mod.UnpicklingError = pickle.UnpicklingError
    return mod


def restricted_load(path: str):
    """``torch.load`` (zip or legacy format) through :class:`RestrictedUnpickler`: module
    classes come back as :class:`ModulePlaceholder` instances; anything that is not a
    tensor, a storage, a plain container or a module class raises
    :class:`UnsafeCheckpointError`."""
    with warnings.catch_warnings():
        # legacy files carry the modules' source; a placeholder has none to compare with.
        warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
        return torch.load(path, map_location="cpu", weights_only=False,
                          pickle_module=_restricted_pickle_module())


def module_state_dict(obj: ModulePlaceholder, prefix: str = "",
                      out: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """The state dict of a restricted-unpickled module tree, from its recorded
    ``_parameters`` / ``_buffers`` / ``_modules`` (as ``nn.Module.state_dict`` would)."""
    out = collections.OrderedDict() if out is None else out
    state = obj._pickled_state
    if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
        state = state[0]
    if not isinstance(state, dict) or "_modules" not in state:
        raise CheckpointFormatError(
            f"'{prefix or '<top>'}' is a pickled {obj._pickled_global} that does not carry an "
            "nn.Module state (_parameters/_buffers/_modules).")
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for kind in ("_parameters", "_buffers"):
        for name, t in (state.get(kind) or {}).items():
            if t is None or (kind == "_buffers" and name in non_persistent):
                continue
            if not isinstance(t, torch.Tensor):
                raise CheckpointFormatError(
                    f"'{prefix}{name}' of {obj._pickled_global} is a {type(t).__name__}, not "
                    "a tensor.")
            out[prefix + name] = t.detach()
    for name, m in (state.get("_modules") or {}).items():
        if m is None:
            continue
        if not isinstance(m, ModulePlaceholder):
            raise CheckpointFormatError(f"sub-module '{prefix}{name}' is a {type(m).__name__}.")
        module_state_dict(m, f"{prefix}{name}.", out)
    return out


def load_checkpoint_file(path: str) -> Tuple[Any, str]:
    """Read a checkpoint safely. Returns (object, how), where ``how`` describes what was
    read. A pickled whole module (also as the ``"model"`` entry of a dict) comes back as its
    state dict.

    ``torch.load(weights_only=True)`` first; only when that refuses the file, the restricted
    unpickler. Raises :class:`UnsafeCheckpointError` for files that need arbitrary
    unpickling.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True), "torch.load(weights_only=True)"
    except pickle.UnpicklingError as e:
        weights_only_error = str(e).split("\n\n")[0]
    try:
        obj = restricted_load(path)
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(
            f"{path}: {e}\nThe file needs arbitrary unpickling, which ssd_r34 never does. "
            "A checkpoint must be a state dict, a dict with a 'model' state dict, or a pickled "
            "nn.Module of the MLPerf reference (read without running its code).\n"
            f"(torch.load(weights_only=True) said: {weights_only_error})") from None
    if isinstance(obj, ModulePlaceholder):
        return module_state_dict(obj), \
            f"a pickled whole nn.Module '{obj._pickled_global}' (read with a restricted unpickler)"
    if isinstance(obj, dict) and isinstance(obj.get("model"), ModulePlaceholder):
        name = obj["model"]._pickled_global
        obj = dict(obj, model=module_state_dict(obj["model"]))
        return obj, f"a dict with a pickled whole nn.Module '{name}' (restricted unpickler)"
    bad = [k for k, v in (obj.items() if isinstance(obj, dict) else [])
           if isinstance(v, ModulePlaceholder)]
    if bad:
        raise CheckpointFormatError(f"{path}: pickled modules under keys {bad[:MAX_LISTED]}; "
                                    "expected a state dict or a whole module.")
    return obj, "a restricted unpickler"


# ---------------------------------------------------------------------------------------
# MLPerf reference layout
# ---------------------------------------------------------------------------------------
def _bn(prefix, c):
    return {f"{prefix}.{t}": (c,) for t in BN_TENSORS}


def reference_key_shapes(num_classes: int = 81) -> Dict[str, Tuple[int, ...]]:
    """Every state-dict key of the reference (spec section 2; ``num_batches_tracked``
    omitted) with its shape. ``num_classes`` includes background."""
    shapes = {"model.layer1.0.weight": (64, 3, 7, 7), **_bn("model.layer1.1", 64)}
    for prefix, _, _, blocks, cin, cout in STAGES:
        for i in range(blocks):
            p, c0 = f"{prefix}.{i}", (cin if i == 0 else cout)
            shapes[f"{p}.conv1.weight"] = (cout, c0, 3, 3)
            shapes.update(_bn(f"{p}.bn1", cout))
            shapes[f"{p}.conv2.weight"] = (cout, cout, 3, 3)
            shapes.update(_bn(f"{p}.bn2", cout))
            if i == 0 and cin != cout:
                shapes[f"{p}.downsample.0.weight"] = (cout, cin, 1, 1)
                shapes.update(_bn(f"{p}.downsample.1", cout))
    for i, (cin, mid, cout) in enumerate(EXTRA_CHANNELS):
        shapes.update({f"additional_blocks.{i}.0.weight": (mid, cin, 1, 1),
                       f"additional_blocks.{i}.0.bias": (mid,),
                       f"additional_blocks.{i}.2.weight": (cout, mid, 3, 3),
                       f"additional_blocks.{i}.2.bias": (cout,)})
    for head, k in (("loc", 4), ("conf", num_classes)):
        for i, (nd, c) in enumerate(zip(NUM_DEFAULTS, SOURCE_CHANNELS)):
            shapes[f"{head}.{i}.weight"] = (nd * k, c, 3, 3)
            shapes[f"{head}.{i}.bias"] = (nd * k,)
    return shapes


_BLOCK_NAMES = {"conv1": "conv1", "bn1": "conv1.norm", "conv2": "conv2", "bn2": "conv2.norm",
                "downsample.0": "shortcut", "downsample.1": "shortcut.norm"}


def _d2_name(key: str) -> str:
    """Reference key -> ssd_r34 key (heads keep their names; their channels are permuted)."""
    if key.startswith("model.layer1.0."):
        return "backbone.stem.conv1." + key[len("model.layer1.0."):]
    if key.startswith("model.layer1.1."):
        return "backbone.stem.conv1.norm." + key[len("model.layer1.1."):]
    for prefix, _, stage, _, _, _ in STAGES:
        m = re.fullmatch(re.escape(prefix) + r"\.(\d+)\.(conv1|bn1|conv2|bn2|downsample\.[01])"
                         r"\.(\w+)", key)
        if m:
            return f"backbone.{stage}.{m[1]}.{_BLOCK_NAMES[m[2]]}.{m[3]}"
    m = re.fullmatch(r"additional_blocks\.(\d)\.([02])\.(weight|bias)", key)
    if m:
        return f"backbone.extra{m[1]}.{'conv1' if m[2] == '0' else 'conv2'}.{m[3]}"
    m = re.fullmatch(r"(loc|conf)\.(\d)\.(weight|bias)", key)
    if m:
        return f"head.{key}"
    raise KeyError(key)


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


def _first(keys, n=MAX_LISTED):
    keys = list(keys)
    return ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "")


def _split_container(obj, how: str):
    """(state dict candidate, layout words, other top-level entries) of a loaded object."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        others = {k: v for k, v in obj.items() if k != "model"}
        return obj["model"], (f"{how}: a dict with a 'model' state dict and "
                              f"{sorted(map(str, others)) or 'nothing else'}"), others
    if isinstance(obj, dict) and how.startswith("a pickled whole nn.Module"):
        return obj, how, {}  # the state dict of the module tree
    if isinstance(obj, dict):
        return obj, f"{how}: a bare state dict", {}
    return None, f"{how}: a {type(obj).__name__}", {}


def find_mlperf_checkpoint(obj, how: str = "loaded",
                           num_classes: Optional[int] = None) -> Optional[MLPerfCheckpoint]:
    """Recognise and validate an MLPerf SSD-R34 state dict inside a loaded object.

    Returns None when ``obj`` does not look like one at all (none of the reference's
    signature keys); raises :class:`CheckpointFormatError` when it does but keys or shapes
    are wrong, or when ``num_classes`` (foreground classes, as MODEL.SSD.NUM_CLASSES) is
    given and differs from the file's.
    """
    sd, layout, others = _split_container(obj, how)
    if not isinstance(sd, dict) or not sd:
        return None
    keys = [k for k in sd if isinstance(k, str)]
    if len(keys) != len(sd):
        return None
    prefixed = [k for k in keys if k.startswith("module.")]
    if prefixed and len(prefixed) == len(keys):
        sd = collections.OrderedDict((k[len("module."):], v) for k, v in sd.items())
        layout += ", with a 'module.' prefix on every key (DataParallel)"
    if not any(k in sd for k in SIGNATURE):
        return None
    sd = collections.OrderedDict((k, v) for k, v in sd.items()
                                 if not k.endswith(".num_batches_tracked"))
    not_tensors = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointFormatError(f"not an MLPerf SSD-ResNet34 checkpoint ({layout}): "
                                    f"non-tensor entries {_first(not_tensors)}")
    if "loc.0.weight" not in sd or "conf.0.weight" not in sd:
        raise CheckpointFormatError(
            f"not a complete MLPerf SSD-ResNet34 checkpoint ({layout}): missing "
            f"{_first(k for k in ('loc.0.weight', 'conf.0.weight') if k not in sd)}")
    nd0 = sd["loc.0.weight"].shape[0] // 4
    classes, rem = divmod(sd["conf.0.weight"].shape[0], max(nd0, 1))
    if nd0 != NUM_DEFAULTS[0] or rem:
        raise CheckpointFormatError(
            f"not an MLPerf SSD-ResNet34 checkpoint ({layout}): loc.0.weight has "
            f"{sd['loc.0.weight'].shape[0]} output channels and conf.0.weight "
            f"{sd['conf.0.weight'].shape[0]}; expected {NUM_DEFAULTS[0]} * 4 and "
            f"{NUM_DEFAULTS[0]} * (classes + 1).")
    expected = reference_key_shapes(classes)
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)} (expected {expected[k]})" for k in expected
             if k in sd and tuple(sd[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        msg = [f"not an MLPerf SSD-ResNet34 checkpoint ({layout}):"]
        if missing:
            msg.append(f"missing keys: {_first(missing)}")
        if unexpected:
            msg.append(f"unexpected keys: {_first(unexpected)}")
        if wrong:
            msg.append(f"wrong shapes: {_first(wrong)}")
        raise CheckpointFormatError("\n  ".join(msg))
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
    """Reference state dict -> ssd_r34's, with the head channels permuted.

    loc: reference channel ``k*nd + a`` -> ``a*4 + k``. conf: reference channel ``c*nd + a``
    (class 0 background, 1..K foreground) -> ``a*(K+1) + c'`` with ``c' = c - 1`` for the
    foreground and background last (``c' = K``). ``num_batches_tracked`` is dropped (BN
    sets it to 0; FrozenBN has none), so every Detectron2 norm loads without a missing or
    unexpected key.
    """
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


# ---------------------------------------------------------------------------------------
# torchvision ResNet-34 (ImageNet) -> backbone initialisation
# ---------------------------------------------------------------------------------------
def is_torchvision_resnet34(sd) -> bool:
    """A torchvision ResNet-34 state dict (BasicBlocks 3, 4, 6, 3)?"""
    if not isinstance(sd, dict) or "conv1.weight" not in sd or "bn1.weight" not in sd:
        return False
    keys = [k for k in sd if isinstance(k, str)]
    for stage, blocks in (("layer1", 3), ("layer2", 4), ("layer3", 6), ("layer4", 3)):
        if f"{stage}.{blocks - 1}.conv2.weight" not in keys or \
                f"{stage}.{blocks}.conv1.weight" in keys or f"{stage}.0.conv3.weight" in keys:
            return False
    return True


def convert_torchvision_resnet34(sd) -> Dict[str, torch.Tensor]:
    """torchvision ResNet-34 weights -> ssd_r34 backbone keys (stem, res2..res4).
    ``layer4`` and ``fc`` are dropped, as are ``num_batches_tracked``. The backbone's
    first res4 block has stride 1 but the same shapes. torchvision's ImageNet models take
    RGB in [0, 1] normalised by mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225):
    the configs' PIXEL_MEAN / PIXEL_STD (x 255) with INPUT.FORMAT RGB."""
    sd = collections.OrderedDict(
        (k[len("module."):] if k.startswith("module.") else k, v) for k, v in sd.items())
    if not is_torchvision_resnet34(sd):
        raise CheckpointFormatError(
            "not a torchvision ResNet-34 state dict (expected conv1.weight, bn1.*, layer1.0-2, "
            f"layer2.0-3, layer3.0-5, layer4.0-2 BasicBlocks); its first keys are: {_first(sd)}")
    shapes = {}  # the reference backbone shapes, renamed to torchvision's
    out = collections.OrderedDict()
    for key, t in sd.items():
        if key.endswith(".num_batches_tracked") or key.startswith(("layer4.", "fc.")):
            continue
        if key.startswith("conv1."):
            ref = "model.layer1.0." + key[len("conv1."):]
        elif key.startswith("bn1."):
            ref = "model.layer1.1." + key[len("bn1."):]
        else:
            stage = next((s for s in STAGES if key.startswith(s[1] + ".")), None)
            if stage is None:
                raise CheckpointFormatError(f"unexpected torchvision key {key}")
            ref = stage[0] + key[len(stage[1]):]
        if not shapes:
            shapes = reference_key_shapes()
        if ref not in shapes or tuple(t.shape) != shapes[ref]:
            raise CheckpointFormatError(
                f"torchvision key {key} {tuple(t.shape)} does not fit ResNet-34 "
                f"(expected {shapes.get(ref)})")
        out[_d2_name(ref)] = t.detach()
    return out


# ---------------------------------------------------------------------------------------
# Detectron2 checkpointer
# ---------------------------------------------------------------------------------------
class SSDCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that also reads, converting in memory:

    * MLPerf SSD-ResNet34 files in any of the four shapes (spec section 2), checking the
      class count against the model's MODEL.SSD.NUM_CLASSES;
    * torchvision ResNet-34 state dicts (backbone initialisation; extra blocks and head
      stay as initialised).

    Every file is read with ``torch.load(weights_only=True)`` or, for a pickled whole
    module, the restricted unpickler; a file that needs arbitrary unpickling is refused.
    """

    def _torch_load(self, f):
        obj, how = load_checkpoint_file(f)
        model = self.model.module if isinstance(self.model, DistributedDataParallel) \
            else self.model
        ckpt = find_mlperf_checkpoint(obj, how, getattr(model, "num_classes", None))
        if ckpt is not None:
            self.logger.info(
                f"{os.path.basename(f)} is an MLPerf SSD-ResNet34 checkpoint "
                f"({ckpt.describe()}): converting it in memory to ssd_r34's layout (loc/conf "
                "channels permuted to anchor-major, background class moved last).")
            return {"model": convert_mlperf_state_dict(ckpt)}
        sd = obj.get("model", obj) if isinstance(obj, dict) else obj
        if isinstance(sd, dict) and is_torchvision_resnet34(
                {k[7:] if str(k).startswith("module.") else k: v for k, v in sd.items()}):
            self.logger.info(f"{os.path.basename(f)} is a torchvision ResNet-34: loading it "
                             "into the backbone (stem, res2..res4); extra blocks and head keep "
                             "their initialisation.")
            return {"model": convert_torchvision_resnet34(sd)}
        if not isinstance(obj, dict):
            raise CheckpointFormatError(f"{f}: read {how}, but it is not a checkpoint dict.")
        return obj
