"""CPU kernels and small ops of ssd_r34 (docs/layers.md). Nothing here imports the rest of
ssd_r34."""
from .batch_norm import fold_batch_norms
from .onednn import fuse_for_cpu, onednn_fusion_available
from .sparse_grad import conv2d_sparse_grad
from .winograd import WinogradConv2d, use_winograd, winograd_available
from .wrappers import (are_numbers, check_fixed_size, check_numbers, is_exporting,
                       is_exporting_onnx, is_int, is_number, refuse)

__all__ = ["is_exporting", "is_exporting_onnx", "refuse", "is_number", "is_int", "are_numbers",
           "check_numbers", "check_fixed_size", "fold_batch_norms", "fuse_for_cpu",
           "onednn_fusion_available", "conv2d_sparse_grad", "WinogradConv2d", "use_winograd",
           "winograd_available"]
