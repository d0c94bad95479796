#!/usr/bin/env python
"""Score LoadGen's mlperf_log_accuracy.json as MLPerf's accuracy-coco.py. The code:
ssd_r34/cli/mlperf_accuracy.py; usage: docs/mlperf_inference.md."""
from ssd_r34.cli.mlperf_accuracy import get_parser, main  # noqa: F401  (get_parser: --help docs)

if __name__ == "__main__":
    main()
