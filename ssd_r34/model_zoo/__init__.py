"""Detectron2-style model zoo of ssd_r34: the config files shipped with the package and the
released MLPerf weights (a local file; nothing is downloaded). See docs/model_zoo.md."""
from .model_zoo import (MLPERF_1200_URL, WEIGHTS_ENV, get, get_config, get_config_file,
                        list_configs, trained_weights)

__all__ = ["get", "get_config", "get_config_file", "list_configs", "trained_weights",
           "MLPERF_1200_URL", "WEIGHTS_ENV"]
