"""MLPerf inference: the LoadGen harness (query sample library, system under test, settings),
pluggable inference backends, and the accuracy records MLPerf's ``accuracy-coco.py`` reads
(with a re-implementation of its scoring). Sits on top like ``engine``; LoadGen
(``mlperf_loadgen``) is imported only when a test runs."""
from .accuracy import (decode_records, encode_records, label_map_for, load_accuracy_log,
                       load_coco, score_accuracy_log)
from .backends import (BACKENDS, OnnxRuntimeBackend, PyTorchBackend, build_backend,
                       normalized_batch, register_backend)
from .harness import (MLPERF_MODEL_NAME, MODES, SCENARIOS, SUT, DatasetQSL, build_settings,
                      parse_summary, run_loadgen)

__all__ = ["decode_records", "encode_records", "label_map_for", "load_accuracy_log",
           "load_coco", "score_accuracy_log", "BACKENDS", "OnnxRuntimeBackend",
           "PyTorchBackend", "build_backend", "normalized_batch", "register_backend",
           "MLPERF_MODEL_NAME", "MODES", "SCENARIOS", "SUT", "DatasetQSL", "build_settings",
           "parse_summary", "run_loadgen"]
