"""Checkpoints: safe loading, MLPerf and torchvision conversion, the SSD checkpointer and
crash-safe (atomic) checkpoint writes (docs/checkpoints.md)."""
from .atomic_io import CheckpointWriteError, make_checkpointer_atomic
from .checkpointer import SSDCheckpointer
from .mlperf import (MLPerfCheckpoint, convert_mlperf_state_dict, convert_torchvision_resnet34,
                     find_mlperf_checkpoint, is_torchvision_resnet34, read_mlperf_checkpoint,
                     reference_key_shapes)
from .safe_load import CheckpointFormatError, UnsafeCheckpointError, load_checkpoint_file

__all__ = ["CheckpointFormatError", "CheckpointWriteError", "UnsafeCheckpointError",
           "MLPerfCheckpoint", "load_checkpoint_file", "find_mlperf_checkpoint",
           "read_mlperf_checkpoint", "convert_mlperf_state_dict", "reference_key_shapes",
           "is_torchvision_resnet34", "convert_torchvision_resnet34", "SSDCheckpointer",
           "make_checkpointer_atomic"]
