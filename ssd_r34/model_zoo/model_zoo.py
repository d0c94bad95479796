"""``get_config_file`` / ``get_config`` / ``get`` as ``detectron2.model_zoo``, for the yaml and
LazyConfig files of ``configs/`` (or an installed copy) and released weights (docs/model_zoo.md)."""
import os
from typing import List, Optional

import torch

from detectron2.config import CfgNode, LazyConfig, instantiate
from detectron2.modeling import build_model

from ..checkpoint import SSDCheckpointer
from ..config import get_ssd_cfg, norm_on

# The MLPerf inference v0.5 SSD-ResNet34 weights (1200x1200, PyTorch), for ssd_r34_1200.*,
# and the environment variable naming that file on this machine.
MLPERF_1200_URL = "https://zenodo.org/record/3236545/files/resnet34-ssd1200.pytorch"
WEIGHTS_ENV = "SSD_R34_MLPERF_WEIGHTS"
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG_DIRS = [os.path.join(_PACKAGE, "configs"),  # installed package
                os.path.join(os.path.dirname(_PACKAGE), "configs")]  # source checkout


def list_configs() -> List[str]:
    """Names of the shipped config files (``ssd_r34_1200.yaml``, ``ssd_r34_1200.py``, ...)."""
    d = next((d for d in _CONFIG_DIRS if os.path.isdir(d)), None)
    return sorted(f for f in os.listdir(d) if f.endswith((".yaml", ".py"))) if d else []


def get_config_file(config_path: str) -> str:
    """Absolute path of a shipped config.

    Args:
        config_path: a file name of ``configs/`` (the prefix "configs/" and the extension
            ``.yaml`` are optional).
    Returns:
        str: the path, in the installed package or the source checkout.
    """
    name = config_path.removeprefix("configs/")
    name += "" if name.endswith((".yaml", ".py")) else ".yaml"
    for path in (os.path.join(d, name) for d in _CONFIG_DIRS):
        if os.path.isfile(path):
            return path
    raise RuntimeError(f"{config_path} is not a config of the ssd_r34 model zoo; available: "
                       f"{', '.join(list_configs()) or 'none (a broken installation)'}.")


def trained_weights(config_path: str, weights: Optional[str] = None) -> str:
    """The existing local file of a config's released weights: ``weights``, else
    $SSD_R34_MLPERF_WEIGHTS. Nothing is downloaded: the error says what to download."""
    if os.path.splitext(os.path.basename(config_path))[0] != "ssd_r34_1200":
        raise ValueError(
            f"No released weights for {config_path}: only ssd_r34_1200 has (the MLPerf "
            "inference model). Train it (tools/train_net.py) and load the result with "
            "MODEL.WEIGHTS, or call get(..., trained=False).")
    path = weights or os.environ.get(WEIGHTS_ENV, "")
    if not path:
        raise FileNotFoundError(
            f"{config_path} with trained=True needs the MLPerf weights file, which is not "
            f"downloaded for you: download {MLPERF_1200_URL} and pass its path (weights=...) "
            f"or set {WEIGHTS_ENV}=/path/to/{os.path.basename(MLPERF_1200_URL)}.")
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"MLPerf weights file {path!r} (from {'weights=' if weights else WEIGHTS_ENV}) "
            f"does not exist: download {MLPERF_1200_URL} there, or point {WEIGHTS_ENV} at the "
            "downloaded file.")
    return path


def get_config(config_path: str, trained: bool = False, weights: Optional[str] = None):
    """A zoo config: a ``CfgNode`` (``.yaml``) or a LazyConfig ``DictConfig`` (``.py``), on
    the CPU where there is no CUDA; with ``trained=True`` its weights (MODEL.WEIGHTS /
    ``train.init_checkpoint``) are the released file (:func:`trained_weights`)."""
    def device(name):
        return "cpu" if name.startswith("cuda") and not torch.cuda.is_available() else name

    path = get_config_file(config_path)
    checkpoint = trained_weights(config_path, weights) if trained else None
    if path.endswith(".yaml"):
        cfg = get_ssd_cfg()
        cfg.merge_from_file(path)
        cfg.MODEL.DEVICE = device(cfg.MODEL.DEVICE)
        cfg.MODEL.RESNETS.NORM = norm_on(cfg.MODEL.DEVICE, cfg.MODEL.RESNETS.NORM)
        cfg.MODEL.WEIGHTS = checkpoint or cfg.MODEL.WEIGHTS
    else:
        cfg = LazyConfig.load(path)
        cfg.train.device = device(cfg.train.device)
        cfg.model.backbone.norm = norm_on(cfg.train.device, cfg.model.backbone.norm)
        cfg.train.init_checkpoint = checkpoint or cfg.train.init_checkpoint
    return cfg


def get(config_path: str, trained: bool = False, device: Optional[str] = None,
        weights: Optional[str] = None) -> torch.nn.Module:
    """The model of a zoo config, in eval mode; with ``trained=True`` its released weights
    (MLPerf files converted, ssd_r34/checkpoint/). ``device``: default the config's."""
    cfg = get_config(config_path, trained=trained, weights=weights)
    if isinstance(cfg, CfgNode):
        cfg.MODEL.DEVICE = device or cfg.MODEL.DEVICE
        model, path = build_model(cfg), cfg.MODEL.WEIGHTS
    else:
        cfg.train.device = device or cfg.train.device
        model, path = instantiate(cfg.model).to(cfg.train.device), cfg.train.init_checkpoint
    if path:
        SSDCheckpointer(model).load(path)
    return model.eval()
