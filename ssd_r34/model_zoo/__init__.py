"""Detectron2-style model zoo of ssd_r34 (docs/model_zoo.md)."""
from .model_zoo import (MLPERF_1200_URL, WEIGHTS_ENV, get, get_config, get_config_file,
                        list_configs, trained_weights)  # noqa: F401
