# Two commands on a fresh machine: `make demo` and `make test`.
# Set-up is shared: a .venv with torch, Detectron2 and the pure-Python dependencies,
# and ssd_r34 installed in editable mode. Each step is skipped when already done.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
SITE = $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# Detectron2's pure-Python dependencies and ours, pinned.
DEPS := "setuptools<81" "numpy<2.4" "pycocotools==2.0.10" "fvcore==0.1.5.post20221221" \
	"iopath==0.1.9" "omegaconf==2.3.0" "hydra-core==1.3.2" "yacs==0.1.8" "tabulate==0.9.0" \
	"cloudpickle==3.1.1" "tqdm==4.67.1" "tensorboard==2.20.0" "matplotlib==3.10.3" \
	"termcolor==3.1.0" "Pillow==11.3.0" "pytest==8.4.1" "onnx==1.19.0" "onnxruntime==1.22.1" \
	"onnxscript==0.4.0" "opencv-python-headless==4.13.0.92" "hypothesis==6.170.15" \
	"mlperf-logging==4.1.68" "mlcommons-loadgen==6.0.17" "openvino==2026.4.1" "nncf==3.4.0"

.PHONY: setup demo test test-slow test-all bench mutants clean-venv
setup: $(VENV)/.ssd_r34_setup

$(VENV)/.ssd_r34_setup: setup.py pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c 'import torch, torchvision; assert torch.__version__.startswith("2.14.1")' 2>/dev/null \
		|| $(PIP) install torch==2.14.1 torchvision==0.29.1
	$(PIP) install $(DEPS)
	@if $(PY) -c 'import detectron2' 2>/dev/null; then \
		echo "detectron2 already importable: keeping it"; \
	else \
		$(PIP) install --no-deps --target $(SITE) --python-version 3.10 --only-binary=:all: \
			--implementation cp sal-detectron2==0.7.2; \
	fi
	$(PIP) install --no-deps --no-build-isolation -e .
	@# Build MODEL.SSD.WINOGRAD's C++ transforms now (g++, about 30 s) rather than in the
	@# first training step; where that fails, training warns and runs direct convolutions.
	$(PY) -c 'from ssd_r34.layers.winograd import winograd_available as a; print("Winograd C++ transforms built:", a())'
	touch $@

# Train from scratch on the built-in data set (CPU), print the COCO AP table, then draw
# predictions on a few validation images (output/demo/predictions/*.png, montage
# output/demo/predictions.png) and the training curves (output/demo/metrics.png).
demo: setup
	$(PY) tools/train_net.py --config-file configs/ssd_r34_shapes.yaml OUTPUT_DIR output/demo
	$(PY) tools/demo.py --config-file configs/ssd_r34_shapes.yaml --dataset shapes_val \
		--num-images 6 --output output/demo/predictions --montage output/demo/predictions.png \
		MODEL.WEIGHTS output/demo/model_final.pth
	$(PY) tools/plot_metrics.py output/demo

# `make test`: the fast suite (every behaviour once, in-process where it can be; minutes).
# `make test-all`: that and the slow end-to-end cases marked `slow` (a fresh-venv install,
# multi-process training, every LoadGen scenario, the full fuzzing and property runs, INT8
# calibration with NNCF); `make test-slow` runs those alone (.ci/run: test, then test-slow).
# docs/testing.md lists both sets and their times.
PYTEST_ARGS ?=
test: setup
	$(PY) -m pytest tests -q -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest tests -q -m slow $(PYTEST_ARGS); rc=$$?; \
		if [ $$rc -eq 5 ]; then echo "no slow test selected"; else exit $$rc; fi

test-all: setup
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/run_all.py

# ---- GPU check (docs/gpu.md) ----------------------------------------------------------
# The GPU machines have Python 3.12 and a CUDA PyTorch (with torchvision, numpy, onnx,
# onnxruntime, opencv, pytest) and no network. `make gpu-wheels` (here, with network)
# downloads what else the check imports into wheels/gpu/ (ignored by git; the device run
# carries it); `make gpu-check` (there) installs them with --no-index into
# output/gpu_check_work/site and runs benchmarks/gpu_check.py against the machine's own torch.
GPU_WHEELS_DIR ?= wheels/gpu
GPU_PYVER ?= 3.12
GPU_PIP ?= $(PYTHON) -m pip --disable-pip-version-check
GPU_PYTHON ?= python3
GPU_CHECK_ARGS ?=
# Pure-Python or cp312 wheels, pinned as in DEPS. fvcore and antlr4-python3-runtime (needed
# by omegaconf) are published as sources only: built into wheels here.
GPU_BINARY_WHEELS := "iopath==0.1.9" "portalocker==3.2.0" "yacs==0.1.8" "omegaconf==2.3.0" \
	"hydra-core==1.3.2" "pycocotools==2.0.10" "PyYAML==6.0.2" "tabulate==0.9.0" \
	"termcolor==3.1.0" "cloudpickle==3.1.1" "tqdm==4.67.1" "tensorboard==2.20.0" \
	"absl-py==2.3.1" "Markdown==3.8.2" "Werkzeug==3.1.3" "matplotlib==3.10.3" \
	"contourpy==1.3.3" "cycler==0.12.1" "fonttools==4.59.0" "kiwisolver==1.4.8" \
	"pyparsing==3.2.3" "python-dateutil==2.9.0.post0" "six==1.17.0"
GPU_SOURCE_WHEELS := "fvcore==0.1.5.post20221221" "antlr4-python3-runtime==4.9.3"

.PHONY: gpu-wheels gpu-check
gpu-wheels:
	mkdir -p $(GPU_WHEELS_DIR)
	$(GPU_PIP) download --no-deps --dest $(GPU_WHEELS_DIR) --only-binary=:all: \
		--python-version $(GPU_PYVER) --implementation cp --platform manylinux2014_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 $(GPU_BINARY_WHEELS)
	@# Detectron2's Python code: the wheel is tagged cp310 (its compiled _C, unused by ssd_r34,
	@# loads on 3.10 only); gpu_check.py installs it with the same tag flags.
	$(GPU_PIP) download --no-deps --dest $(GPU_WHEELS_DIR) --only-binary=:all: \
		--python-version 3.10 --implementation cp --platform linux_x86_64 sal-detectron2==0.7.2
	$(GPU_PIP) wheel --no-deps --wheel-dir $(GPU_WHEELS_DIR) $(GPU_SOURCE_WHEELS)
	@du -sh $(GPU_WHEELS_DIR); ls $(GPU_WHEELS_DIR)

# On the GPU machine: install wheels/gpu offline, then every phase (< 8 minutes in all).
gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py --wheels $(GPU_WHEELS_DIR) $(if $(OUT),--output-dir $(OUT)) $(GPU_CHECK_ARGS)

# Hand-written mutants (tests/mutants/run_mutants.py, listed in docs/testing.md), each run on
# a copy of the tree against its killing tests; fails if any mutant survives. Not in `test`.
mutants: setup
	$(PY) tests/mutants/run_mutants.py
