"""``get_config_file`` / ``get_config`` / ``get`` as ``detectron2.model_zoo``, for ssd_r34's
configs (yaml and LazyConfig ``.py``) and released weights (docs/model_zoo.md). The configs
are the checkout's ``configs/``, or the copy an installed package carries (setup.py)."""
import os
from typing import List, Optional

import torch

# The MLPerf inference v0.5 SSD-ResNet34 weights (1200x1200, PyTorch), for ssd_r34_1200.*.
MLPERF_1200_URL = "https://zenodo.org/record/3236545/files/resnet34-ssd1200.pytorch"
# Environment variable naming that file on this machine.
WEIGHTS_ENV = "SSD_R34_MLPERF_WEIGHTS"
# config name (without extension) -> (weights URL, environment variable)
_RELEASED = {"ssd_r34_1200": (MLPERF_1200_URL, WEIGHTS_ENV)}
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG_DIRS = [os.path.join(_PACKAGE, "configs"),  # installed package
                os.path.join(os.path.dirname(_PACKAGE), "configs")]  # source checkout


def list_configs() -> List[str]:
    """Names of the shipped config files (``ssd_r34_1200.yaml``, ``ssd_r34_1200.py``, ...)."""
    for d in _CONFIG_DIRS:
        if os.path.isdir(d):
            return sorted(f for f in os.listdir(d) if f.endswith((".yaml", ".py")))
    return []


def get_config_file(config_path: str) -> str:
    """Absolute path of a shipped config.

    Args:
        config_path: a file name of ``configs/`` (the prefix "configs/" and the extension
            ``.yaml`` are optional).
    Returns:
        str: the path, in the installed package or the source checkout.
    """
    name = config_path[len("configs/"):] if config_path.startswith("configs/") else config_path
    name += "" if name.endswith((".yaml", ".py")) else ".yaml"
    for d in _CONFIG_DIRS:
        if os.path.isfile(os.path.join(d, name)):
            return os.path.join(d, name)
    raise RuntimeError(f"{config_path} is not a config of the ssd_r34 model zoo; available: "
                       f"{', '.join(list_configs()) or 'none (a broken installation)'}.")


def trained_weights(config_path: str, weights: Optional[str] = None) -> str:
    """The local file of a config's released weights: ``weights``, else the environment
    variable (``SSD_R34_MLPERF_WEIGHTS``). Nothing is downloaded: a missing file raises an
    error that says what to download. Returns: str, an existing path."""
    stem = os.path.splitext(os.path.basename(config_path))[0]
    if stem not in _RELEASED:
        raise ValueError(
            f"No released weights for {config_path}: only {', '.join(sorted(_RELEASED))} has "
            "(the MLPerf inference model). Train it (tools/train_net.py) and load the result "
            "with MODEL.WEIGHTS, or call get(..., trained=False).")
    url, env = _RELEASED[stem]
    path = weights or os.environ.get(env, "")
    if not path:
        raise FileNotFoundError(
            f"{config_path} with trained=True needs the MLPerf weights file, which is not "
            f"downloaded for you: download {url} and pass its path (weights=...) or set "
            f"{env}=/path/to/{os.path.basename(url)}.")
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"MLPerf weights file {path!r} (from {'weights=' if weights else env}) does not "
            f"exist: download {url} there, or point {env} at the downloaded file.")
    return path


def get_config(config_path: str, trained: bool = False, weights: Optional[str] = None):
    """A zoo config: a ``CfgNode`` (``.yaml``) or a LazyConfig ``DictConfig`` (``.py``), on
    the CPU where there is no CUDA; with ``trained=True`` its weights (MODEL.WEIGHTS /
    ``train.init_checkpoint``) are the released file (:func:`trained_weights`)."""
    from detectron2.config import LazyConfig

    from ..config import get_ssd_cfg, norm_on

    def device(name):
        return "cpu" if name.startswith("cuda") and not torch.cuda.is_available() else name

    path = get_config_file(config_path)
    if path.endswith(".yaml"):
        cfg = get_ssd_cfg()
        cfg.merge_from_file(path)
        cfg.MODEL.DEVICE = device(cfg.MODEL.DEVICE)
        cfg.MODEL.RESNETS.NORM = norm_on(cfg.MODEL.DEVICE, cfg.MODEL.RESNETS.NORM)
        if trained:
            cfg.MODEL.WEIGHTS = trained_weights(config_path, weights)
        return cfg
    cfg = LazyConfig.load(path)
    cfg.train.device = device(cfg.train.device)
    cfg.model.backbone.norm = norm_on(cfg.train.device, cfg.model.backbone.norm)
    if trained:
        cfg.train.init_checkpoint = trained_weights(config_path, weights)
    return cfg


def get(config_path: str, trained: bool = False, device: Optional[str] = None,
        weights: Optional[str] = None) -> torch.nn.Module:
    """The model of a zoo config, in eval mode; with ``trained=True`` its released weights
    (MLPerf files converted, ssd_r34/checkpoint/). ``device``: default the config's.

    Example::

        model = ssd_r34.model_zoo.get("ssd_r34_1200.yaml", trained=True)  # SSD_R34_MLPERF_WEIGHTS
    """
    from detectron2.config import CfgNode, instantiate
    from detectron2.modeling import build_model

    from ..checkpoint import SSDCheckpointer

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
