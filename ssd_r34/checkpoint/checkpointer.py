"""SSDCheckpointer: Detectron2's DetectionCheckpointer that also reads MLPerf and torchvision
files, converting them in memory, and never unpickles arbitrary code."""
import os

import numpy as np
import torch

from detectron2.checkpoint import DetectionCheckpointer

from .mlperf import (convert_mlperf_state_dict, convert_torchvision_resnet34,
                     find_mlperf_checkpoint, is_torchvision_resnet34)
from .atomic_io import AtomicPathManager, CheckpointWriteError
from .safe_load import CheckpointFormatError, first_items, load_checkpoint_file

__all__ = ["SSDCheckpointer"]


class SSDCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that reads safely (:mod:`.safe_load`) and converts MLPerf
    SSD-ResNet34 files (class count checked against MODEL.SSD.NUM_CLASSES) and torchvision
    ResNet-34 state dicts (the backbone) in memory. A file of which fewer than ``MIN_FITTING``
    of the tensors fit the model by name and shape is refused, loading nothing. A failed save
    raises CheckpointWriteError naming the file, the cause and the last good checkpoint."""

    MIN_FITTING = 0.5

    def _load_file(self, filename):  # fvcore's load passes what it returns to _load_model
        checkpoint = super()._load_file(filename)
        sd = checkpoint.get("model")
        if isinstance(sd, dict) and not checkpoint.get("matching_heuristics", False):
            self._check_fit(sd, filename)
        return checkpoint

    def _check_fit(self, sd, path):  # before anything is loaded
        model_sd = self.model.state_dict()
        prefix = "module." if sd and all(str(k).startswith("module.") for k in sd) else ""
        misfit = []
        for k, v in sd.items():
            name = str(k)[len(prefix):]
            ref = model_sd.get(name)
            shape = tuple(np.shape(v)) if isinstance(v, (torch.Tensor, np.ndarray)) else None
            if ref is None or shape != tuple(ref.shape):
                misfit.append(f"{name} {shape if shape is not None else type(v).__name__}"
                              + (f" (model: {tuple(ref.shape)})" if ref is not None
                                 else " (not in the model)"))
        fit = len(sd) - len(misfit)
        if sd and fit >= self.MIN_FITTING * len(sd):
            return
        raise CheckpointFormatError(
            f"{path}: not a checkpoint of this model: {fit} of its {len(sd)} entries fit "
            f"the model's {len(model_sd)} tensors by name and shape (another architecture, or "
            f"another MODEL.* setting?). Entries that do not fit: {first_items(misfit)}. The "
            f"model's first keys: {first_items(list(model_sd))}. Nothing was loaded.")

    def save(self, name, **kwargs):  # fvcore's; a failure names file, cause, last good one
        pm, on_disk = self.path_manager, self.save_dir and self.save_to_disk
        if isinstance(pm, AtomicPathManager):
            pm.last_error = None
        before = self.get_checkpoint_file() if on_disk else ""
        try:
            super().save(name, **kwargs)
        except Exception as e:
            if not on_disk:
                raise
            path = os.path.join(self.save_dir, f"{name}.pth")
            cause = getattr(pm, "last_error", None) or e
            cause_text = (f"{cause.strerror or cause} ({type(cause).__name__}"
                          f"{', errno ' + str(cause.errno) if cause.errno else ''})"
                          if isinstance(cause, OSError) else f"{type(cause).__name__}: {cause}")
            last = (f"The last good checkpoint, {before}, is unchanged and is still what "
                    f"{os.path.join(self.save_dir, 'last_checkpoint')} names."
                    if before and os.path.isfile(before) else
                    "There is no earlier checkpoint in this folder.")
            written = isinstance(pm, AtomicPathManager) and os.path.isfile(path) and \
                path not in (before, self.get_checkpoint_file())
            what = (f"{path} was written but last_checkpoint could not be updated" if written
                    else f"could not write checkpoint {path}")
            raise CheckpointWriteError(
                f"{what}: {cause_text}. {last} Free space in (or write permission on) "
                f"{self.save_dir}, or set OUTPUT_DIR elsewhere, then --resume.",
                path=path, last_good=before) from e

    def _torch_load(self, f):
        obj, how = load_checkpoint_file(f)
        model = getattr(self.model, "module", self.model)  # DistributedDataParallel's
        ckpt = find_mlperf_checkpoint(obj, how, getattr(model, "num_classes", None))
        if ckpt is not None:
            self.logger.info(
                f"{os.path.basename(f)} is an MLPerf SSD-ResNet34 checkpoint "
                f"({ckpt.describe()}): converting it in memory to ssd_r34's layout (loc/conf "
                "channels permuted to anchor-major, background class moved last).")
            return {"model": convert_mlperf_state_dict(ckpt)}
        sd = obj.get("model", obj) if isinstance(obj, dict) else obj
        if is_torchvision_resnet34(sd):
            self.logger.info(f"{os.path.basename(f)} is a torchvision ResNet-34: loading it "
                             "into the backbone (stem, res2..res4); extra blocks and head keep "
                             "their initialisation.")
            return {"model": convert_torchvision_resnet34(sd)}
        if not isinstance(obj, dict):
            raise CheckpointFormatError(f"{f}: read {how}, but it is not a checkpoint dict.")
        return obj
