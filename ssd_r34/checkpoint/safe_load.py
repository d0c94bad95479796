"""Safe reading of checkpoint files: ``torch.load(weights_only=True)`` and, for a pickled
whole ``nn.Module`` (the released MLPerf ``resnet34-ssd1200.pytorch``), a restricted
unpickler that runs no code of the file (docs/checkpoints.md, "Safe loading")."""
import _compat_pickle
import functools
import os
import pickle
import types
import warnings
from typing import Any, Tuple

import torch
from torch import _weights_only_unpickler

__all__ = ["CheckpointFormatError", "UnsafeCheckpointError", "ModulePlaceholder",
           "RestrictedUnpickler", "restricted_load", "load_checkpoint_file"]

# Modules whose classes become placeholders (the reference's module tree).
PLACEHOLDER_MODULES = ("models.", "torch.nn.modules.", "torch.nn.parallel.", "torchvision.")


class CheckpointFormatError(ValueError):
    """The file is not a (compatible) MLPerf SSD-ResNet34 / torchvision ResNet-34 checkpoint."""


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The file needs arbitrary unpickling (it references a global that is neither a tensor,
    a storage, a plain container nor a module class): refused, nothing was executed."""


def first_items(keys, n=5) -> str:
    # The first n of keys, comma-separated, with the total when there are more.
    keys = list(keys)
    return ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "")


class ModulePlaceholder(torch.nn.Module):
    """Stands in for a pickled module class: a bare ``nn.Module`` holding the pickled state
    (``state_dict()`` works), running none of the class's code."""

    _pickled_global = "?"


@functools.lru_cache(maxsize=1024)
def _placeholder(path: str) -> type:
    return type(path.rsplit(".", 1)[1], (ModulePlaceholder,),
                {"_pickled_global": path, "__module__": __name__})


@functools.lru_cache(maxsize=1)
def _allowed_globals():
    # What torch.load(weights_only=True) admits, and a call PyTorch <= 1.0 pickled as the
    # modules' ``_backend`` (meaningless now).
    return {**_weights_only_unpickler._get_allowed_globals(),
            "torch.nn.backends.thnn._get_thnn_function_backend": lambda: None}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves what ``torch.load(weights_only=True)`` admits (tensors, storages, dtypes,
    plain containers) and classes of PLACEHOLDER_MODULES (as :class:`ModulePlaceholder`);
    raises :class:`UnsafeCheckpointError` naming any other global before it is used."""

    def find_class(self, module, name):
        # Python 2 names that protocol < 3 pickles carry (copy_reg, __builtin__ ...).
        module, name = _compat_pickle.NAME_MAPPING.get(
            (module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        path = f"{module}.{name}"
        if path in _allowed_globals():
            return _allowed_globals()[path]
        if f"{module}.".startswith(PLACEHOLDER_MODULES):
            return _placeholder(path)
        raise UnsafeCheckpointError(
            f"refusing to unpickle the global '{path}': it is neither a tensor, a "
            "storage, a plain container nor a module class of an SSD-ResNet34 model, and "
            "loading it could run arbitrary code. Nothing was executed. A checkpoint must be "
            "a state dict, a dict with a 'model' state dict, or a pickled nn.Module of the "
            "MLPerf reference (read without running its code).")


def restricted_load(path: str):
    """``torch.load`` (zip or legacy format) through :class:`RestrictedUnpickler`."""
    pickle_module = types.SimpleNamespace(
        __name__="ssd_r34_restricted_pickle", Unpickler=RestrictedUnpickler,
        load=lambda f, **kwargs: RestrictedUnpickler(f, **kwargs).load())
    with warnings.catch_warnings():
        # legacy files carry the modules' source; a placeholder has none to compare with.
        warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
        return torch.load(path, map_location="cpu", weights_only=False,
                          pickle_module=pickle_module)


def describe_file(path: str) -> str:
    # What an unreadable file looks like, in words, from its size and first bytes.
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        return f"the file cannot be read ({e})"
    if size == 0:
        return "the file is empty (0 bytes)"
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html", b"<?xml", b"<head",
                                         b"<body")):
        return (f"an HTML/XML page ({size} bytes), e.g. an error or login page saved in place "
                "of the download; download the file again")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return (f"a zip archive (PyTorch's checkpoint format, {size} bytes) that is truncated "
                "or damaged (an interrupted download or copy?)")
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return (f"a pickle (protocol {head[1]}, {size} bytes: PyTorch's legacy format) that is "
                "truncated or damaged")
    if head.startswith((b"\x89HDF", b"\x89PNG", b"\xff\xd8", b"GIF8", b"%PDF")):
        return (f"not a checkpoint ({size} bytes starting with {head[:8]!r}: an HDF5, image "
                "or PDF file)")
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
        return torch.load(path, map_location="cpu", weights_only=True), \
            "torch.load(weights_only=True)"
    except Exception:  # noqa: BLE001 - the restricted unpickler below says what is wrong
        pass
    try:
        obj = restricted_load(path)
        model = obj.get("model") if isinstance(obj, dict) else obj
        sd = model.state_dict() if isinstance(model, ModulePlaceholder) else None
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - damaged files (and module trees) fail in many ways
        text = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else ""
        raise CheckpointFormatError(
            f"{path}: not a usable checkpoint: {describe_file(path)} ({type(e).__name__}"
            f"{': ' + text if text else ''}).") from None
    if sd is None:
        return obj, "a restricted unpickler"
    how = (f"a pickled whole nn.Module '{model._pickled_global}' (read with a restricted "
           "unpickler)")
    return (sd, how) if model is obj else (dict(obj, model=sd), "a dict with " + how)
