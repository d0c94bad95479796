"""CPU kernels and small ops of ssd_r34. Nothing here imports the rest of ssd_r34.

- :mod:`.wrappers`: :func:`is_exporting` (tracing / scripting / compiling / ONNX check) and
  the helpers of the config checks;
- :mod:`.winograd` (+ ``csrc/``): Winograd F(2x2, 3x3) 3x3 convolutions (MODEL.SSD.WINOGRAD);
- :mod:`.sparse_grad`: head convolutions whose backward reads only the locations with a
  gradient (MODEL.SSD.SPARSE_HEAD_BACKWARD);
- :mod:`.batch_norm`: BatchNorm folding (MODEL.SSD.FUSE_BN_INFERENCE);
- :mod:`.onednn`: ReLU and residual additions fused into the folded convolutions as oneDNN
  post-ops (MODEL.SSD.ONEDNN_POST_OPS).
"""
from .batch_norm import fold_batch_norms
from .onednn import fuse_for_cpu, onednn_fusion_available
from .sparse_grad import conv2d_sparse_grad
from .winograd import (WinogradConv2d, conv3x3_winograd, use_winograd, winograd_applies,
                       winograd_available, winograd_channels)
from .wrappers import (check_fixed_size, check_numbers, is_exporting, is_int, is_number,
                       refuse)

__all__ = ["is_exporting", "refuse", "is_number", "is_int", "check_numbers", "check_fixed_size",
           "fold_batch_norms", "fuse_for_cpu", "onednn_fusion_available",
           "conv2d_sparse_grad", "WinogradConv2d", "conv3x3_winograd", "use_winograd",
           "winograd_applies", "winograd_available", "winograd_channels"]
