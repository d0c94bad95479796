"""ssd_r34: the MLPerf SSD-ResNet34 detector as a Detectron2 extension (docs/architecture.md).
``import ssd_r34`` registers the backbone, anchor generator, head and meta-architecture SSD
in Detectron2's registries, and the built-in data sets shapes_train / shapes_val."""
import warnings as _warnings

with _warnings.catch_warnings():
    # Detectron2's torch.jit.script decorators, deprecated in this PyTorch: not ssd_r34's.
    _warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    from . import data  # noqa: F401  (registers shapes_train / shapes_val)
    from .config import add_ssd_config, get_ssd_cfg, setup_cfg  # noqa: F401
    from .modeling import (SSD, SSD_HEAD_REGISTRY, SSDAnchorGenerator, SSDHead,  # noqa: F401
                           build_ssd_resnet34_backbone)
