"""SSDCheckpointer: Detectron2's DetectionCheckpointer that also reads MLPerf and torchvision
files, converting them in memory (:mod:`.mlperf`), and never unpickles arbitrary code
(:mod:`.safe_load`)."""
import os

from torch.nn.parallel import DistributedDataParallel

from detectron2.checkpoint import DetectionCheckpointer

from .mlperf import (convert_mlperf_state_dict, convert_torchvision_resnet34,
                     find_mlperf_checkpoint, is_torchvision_resnet34)
from .safe_load import CheckpointFormatError, load_checkpoint_file

__all__ = ["SSDCheckpointer"]


class SSDCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that also reads, converting in memory:

    * MLPerf SSD-ResNet34 files in any of the four shapes of the MLPerf reference, checking the
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
