"""``get_config_file`` / ``get_config`` / ``get`` as Detectron2's ``detectron2.model_zoo``,
for ssd_r34's configs (yaml and LazyConfig ``.py``).

The configs live in the repository's ``configs/``; an installed package carries a copy in
``ssd_r34/configs/`` (setup.py copies them at build time), which is looked at first.
"""
import os
from typing import List, Optional

import torch

__all__ = ["get", "get_config", "get_config_file", "list_configs", "trained_weights",
           "MLPERF_1200_URL", "WEIGHTS_ENV"]

# The MLPerf inference v0.5 SSD-ResNet34 weights (1200x1200, PyTorch), for ssd_r34_1200.*.
MLPERF_1200_URL = "https://zenodo.org/record/3236545/files/resnet34-ssd1200.pytorch"
# Environment variable naming that file on this machine.
WEIGHTS_ENV = "SSD_R34_MLPERF_WEIGHTS"
# config name (without extension) -> (weights URL, environment variable)
_RELEASED = {"ssd_r34_1200": (MLPERF_1200_URL, WEIGHTS_ENV)}


def _config_dirs() -> List[str]:
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [os.path.join(package, "configs"),  # installed package
            os.path.join(os.path.dirname(package), "configs")]  # source checkout / editable


def list_configs() -> List[str]:
    """Names of the shipped config files (``ssd_r34_1200.yaml``, ``ssd_r34_1200.py``, ...)."""
    for d in _config_dirs():
        if os.path.isdir(d):
            return sorted(f for f in os.listdir(d) if f.endswith((".yaml", ".py")))
    return []


def get_config_file(config_path: str) -> str:
    """Absolute path of a shipped config.

    Args:
        config_path: a file name of ``configs/`` (``"ssd_r34_1200.yaml"``,
            ``"ssd_r34_shapes.py"``; ``"configs/"`` in front is allowed; no extension means
            ``.yaml``).

    Returns:
        str: the path, in the installed package or the source checkout.
    """
    name = config_path[len("configs/"):] if config_path.startswith("configs/") else config_path
    if not name.endswith((".yaml", ".py")):
        name += ".yaml"
    for d in _config_dirs():
        path = os.path.join(d, name)
        if os.path.isfile(path):
            return path
    raise RuntimeError(f"{config_path} is not a config of the ssd_r34 model zoo; available: "
                       f"{', '.join(list_configs()) or 'none (a broken installation)'}.")


def trained_weights(config_path: str, weights: Optional[str] = None) -> str:
    """The local file of a config's released weights: ``weights`` if given, else the
    environment variable (``SSD_R34_MLPERF_WEIGHTS`` for ``ssd_r34_1200``). Nothing is
    downloaded; a missing file raises an error that says what to download.

    Returns:
        str: an existing path (an MLPerf file, converted when loaded; or a Detectron2 one).
    """
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


def _device(cfg_device: str) -> str:
    return cfg_device if torch.cuda.is_available() or not cfg_device.startswith("cuda") \
        else "cpu"


def get_config(config_path: str, trained: bool = False, weights: Optional[str] = None):
    """A config of the zoo: a ``CfgNode`` (``.yaml``, with the SSD keys) or an omegaconf
    ``DictConfig`` (``.py``, LazyConfig). With ``trained=True`` its weights
    (MODEL.WEIGHTS / ``train.init_checkpoint``) are the released file (:func:`trained_weights`).
    On a machine without CUDA the device becomes cpu (and SyncBN naiveSyncBN)."""
    path = get_config_file(config_path)
    if path.endswith(".yaml"):
        from ..config import get_ssd_cfg

        cfg = get_ssd_cfg()
        cfg.merge_from_file(path)
        cfg.MODEL.DEVICE = _device(cfg.MODEL.DEVICE)
        if cfg.MODEL.DEVICE == "cpu" and cfg.MODEL.RESNETS.NORM == "SyncBN":
            cfg.MODEL.RESNETS.NORM = "naiveSyncBN"
        if trained:
            cfg.MODEL.WEIGHTS = trained_weights(config_path, weights)
        return cfg
    from detectron2.config import LazyConfig

    cfg = LazyConfig.load(path)
    cfg.train.device = _device(cfg.train.device)
    if cfg.train.device == "cpu" and cfg.model.backbone.norm == "SyncBN":
        cfg.model.backbone.norm = "naiveSyncBN"
    if trained:
        cfg.train.init_checkpoint = trained_weights(config_path, weights)
    return cfg


def get(config_path: str, trained: bool = False, device: Optional[str] = None,
        weights: Optional[str] = None) -> torch.nn.Module:
    """The model of a zoo config, in eval mode; with ``trained=True`` its released weights
    are loaded (MLPerf files converted, ssd_r34/checkpoint). ``device`` defaults to the
    config's (cpu where there is no CUDA).

    Example::

        model = ssd_r34.model_zoo.get("ssd_r34_1200.yaml", trained=True)  # SSD_R34_MLPERF_WEIGHTS
    """
    from detectron2.config import CfgNode, instantiate
    from detectron2.modeling import build_model

    from ..checkpoint import SSDCheckpointer

    cfg = get_config(config_path, trained=trained, weights=weights)
    if not isinstance(cfg, CfgNode):  # LazyConfig
        if device is not None:
            cfg.train.device = device
        model = instantiate(cfg.model).to(cfg.train.device)
        path = cfg.train.init_checkpoint
    else:
        if device is not None:
            cfg.MODEL.DEVICE = device
        model = build_model(cfg)
        path = cfg.MODEL.WEIGHTS
    if path:
        SSDCheckpointer(model).load(path)
    return model.eval()
