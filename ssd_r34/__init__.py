"""ssd_r34: the MLPerf SSD-ResNet34 detector as a Detectron2 extension.

``import ssd_r34`` registers the backbone ``build_ssd_resnet34_backbone``, the anchor generator
``SSDAnchorGenerator``, the head ``SSDHead`` and the meta-architecture ``SSD`` in Detectron2's
registries, and the built-in data sets ``shapes_train`` / ``shapes_val``.

Rooms (imports point one way: layers <- modeling <- checkpoint / export <- engine):
``config`` (keys), ``layers`` (CPU kernels, small ops), ``modeling`` (the model), ``data``
(mapper, augmentations, loader, built-in data sets), ``checkpoint`` (safe loading, MLPerf and
torchvision conversion), ``export`` (TorchScript / ONNX), ``engine`` (trainer, hooks,
predictor), and on top ``model_zoo`` (shipped configs, released weights) and ``cli`` (the
console scripts).
"""
import warnings as _warnings

with _warnings.catch_warnings():
    # Detectron2 decorates a few helpers with torch.jit.script, which this PyTorch flags as
    # deprecated on import: not ssd_r34's to fix, and nothing ssd_r34 runs.
    _warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    from . import data  # noqa: F401  (registers shapes_train / shapes_val)
    from .config import add_ssd_config, get_ssd_cfg, setup_cfg
    from .modeling import (SSD, SSD_HEAD_REGISTRY, SSDAnchorGenerator, SSDHead,
                           build_ssd_resnet34_backbone)

__all__ = ["add_ssd_config", "get_ssd_cfg", "setup_cfg", "build_ssd_resnet34_backbone",
           "SSDAnchorGenerator", "SSD_HEAD_REGISTRY", "SSDHead", "SSD"]
