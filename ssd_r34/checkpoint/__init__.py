"""Checkpoints: safe loading, MLPerf and torchvision conversion, the SSD checkpointer and
crash-safe (atomic) checkpoint writes (docs/checkpoints.md)."""
from .atomic_io import CheckpointWriteError, make_checkpointer_atomic  # noqa: F401
from .checkpointer import SSDCheckpointer  # noqa: F401
from .mlperf import (MLPerfCheckpoint, convert_mlperf_state_dict,  # noqa: F401
                     convert_torchvision_resnet34, find_mlperf_checkpoint,
                     is_torchvision_resnet34, read_mlperf_checkpoint, reference_key_shapes)
from .safe_load import (CheckpointFormatError, UnsafeCheckpointError,  # noqa: F401
                        load_checkpoint_file)
