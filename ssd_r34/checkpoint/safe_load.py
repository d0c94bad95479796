"""Safe reading of checkpoint files: ``torch.load(weights_only=True)`` and, for a pickled
whole ``nn.Module`` (the released MLPerf ``resnet34-ssd1200.pytorch``), a restricted
unpickler that runs no code of the file (docs/checkpoints.md, "Safe loading")."""
import collections
import pickle
import re
import types
import warnings
from typing import Any, Dict, Optional, Tuple

import torch

__all__ = ["CheckpointFormatError", "UnsafeCheckpointError", "ModulePlaceholder",
           "RestrictedUnpickler", "restricted_load", "load_checkpoint_file"]

MAX_LISTED = 5


class CheckpointFormatError(ValueError):
    """The file is not a (compatible) MLPerf SSD-ResNet34 / torchvision ResNet-34 checkpoint."""


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The file needs arbitrary unpickling (it references a global that is neither a tensor,
    a storage, a plain container nor a module class): refused, nothing was executed."""


def first_items(keys, n=MAX_LISTED) -> str:
    # The first n of keys, comma-separated, with the total when there are more.
    keys = list(keys)
    return ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "")


class ModulePlaceholder:
    """Stands in for a pickled module class; runs none of its code, only records the pickled
    state (``_pickled_state``) and constructor arguments (``_pickled_args``)."""

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
    """Resolves only what a saved module tree of tensors needs (tensor rebuild functions,
    storages, sizes, devices, dtypes, OrderedDict, set), makes every class under
    PLACEHOLDER_MODULES an inert :class:`ModulePlaceholder`, and raises
    :class:`UnsafeCheckpointError` naming any other global before it is used."""

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
    """``torch.load`` (zip or legacy format) through :class:`RestrictedUnpickler`."""
    with warnings.catch_warnings():
        # legacy files carry the modules' source; a placeholder has none to compare with.
        warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
        return torch.load(path, map_location="cpu", weights_only=False,
                          pickle_module=_restricted_pickle_module())


def module_state_dict(obj: ModulePlaceholder, prefix: str = "",
                      out: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    # The state dict of a restricted-unpickled module tree, from its recorded _parameters,
    # _buffers and _modules (as nn.Module.state_dict would).
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


def describe_file(path: str) -> str:
    # What an unreadable file looks like, in words, from its size and first bytes.
    import os

    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        return f"the file cannot be read ({e})"
    if size == 0:
        return "the file is empty (0 bytes)"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return (f"an HTML/XML page ({size} bytes), e.g. an error or login page saved in place "
                "of the download; download the file again")
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return (f"a zip archive (PyTorch's checkpoint format, {size} bytes) that is truncated "
                "or damaged (an interrupted download or copy?)")
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return (f"a pickle (protocol {head[1]}, {size} bytes: PyTorch's legacy format) that is "
                "truncated or damaged")
    if head.startswith((b"\x89HDF", b"\x89PNG", b"\xff\xd8", b"GIF8", b"%PDF")):
        return f"not a checkpoint ({size} bytes starting with {head[:8]!r}: an HDF5, image or PDF file)"
    if all(32 <= c < 127 or c in (9, 10, 13) for c in head):
        return f"a text file ({size} bytes) starting with {head[:40].decode('ascii')!r}"
    return f"{size} bytes of unknown content starting with {head[:8].hex(' ')}"


def load_checkpoint_file(path: str) -> Tuple[Any, str]:
    """Read a checkpoint safely: ``torch.load(weights_only=True)``, else the restricted
    unpickler (a pickled whole module, also as the ``"model"`` entry of a dict, comes back as
    its state dict).

    Returns:
        (object, how): ``how`` describes what was read.
    Raises:
        UnsafeCheckpointError: the file needs arbitrary unpickling.
        CheckpointFormatError: naming the file and what it holds (empty, an HTML page, a
            damaged zip archive or pickle ...) for anything else that cannot be read.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True), "torch.load(weights_only=True)"
    except pickle.UnpicklingError as e:
        weights_only_error = str(e).split("\n\n")[0]
    except Exception as e:  # noqa: BLE001 - damaged files fail in many ways
        weights_only_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    try:
        obj = restricted_load(path)
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(
            f"{path}: {e}\nThe file needs arbitrary unpickling, which ssd_r34 never does. "
            "A checkpoint must be a state dict, a dict with a 'model' state dict, or a pickled "
            "nn.Module of the MLPerf reference (read without running its code).\n"
            f"(torch.load(weights_only=True) said: {weights_only_error})") from None
    except (CheckpointFormatError, MemoryError, RecursionError) as e:
        raise CheckpointFormatError(f"{path}: not a usable checkpoint: {describe_file(path)} "
                                    f"({type(e).__name__}: {e}).") from None
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else ""
        raise CheckpointFormatError(
            f"{path}: not a usable checkpoint: {describe_file(path)} ({type(e).__name__}"
            f"{': ' + first if first else ''}).") from None
    try:
        return _unwrap_modules(obj, path)
    except CheckpointFormatError as e:
        raise CheckpointFormatError(str(e) if str(e).startswith(path) else f"{path}: {e}") \
            from None
    except Exception as e:  # noqa: BLE001 - a damaged module tree (cycles, odd containers)
        raise CheckpointFormatError(
            f"{path}: not a usable checkpoint: a pickled module tree that is damaged "
            f"({type(e).__name__}: {str(e)[:200]}).") from None


def _unwrap_modules(obj, path):
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
