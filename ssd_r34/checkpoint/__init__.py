"""Checkpoints: safe loading, MLPerf and torchvision conversion, the SSD checkpointer and
crash-safe (atomic) checkpoint writes."""
from .atomic_io import (CheckpointWriteError, make_checkpointer_atomic,
                        remove_stale_temporary_files)
from .checkpointer import SSDCheckpointer
from .mlperf import (MLPerfCheckpoint, convert_mlperf_state_dict, convert_torchvision_resnet34,
                     find_mlperf_checkpoint, is_torchvision_resnet34, read_mlperf_checkpoint,
                     reference_key_shapes)
from .safe_load import (CheckpointFormatError, ModulePlaceholder, RestrictedUnpickler,
                        UnsafeCheckpointError, load_checkpoint_file, module_state_dict,
                        restricted_load)

__all__ = [
    "CheckpointFormatError", "CheckpointWriteError", "UnsafeCheckpointError", "MLPerfCheckpoint", "ModulePlaceholder",
    "RestrictedUnpickler", "restricted_load", "load_checkpoint_file", "module_state_dict",
    "find_mlperf_checkpoint", "read_mlperf_checkpoint", "convert_mlperf_state_dict",
    "reference_key_shapes", "is_torchvision_resnet34", "convert_torchvision_resnet34",
    "SSDCheckpointer", "make_checkpointer_atomic", "remove_stale_temporary_files",
]
