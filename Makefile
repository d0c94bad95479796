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
	"onnxscript==0.4.0" "opencv-python-headless==4.13.0.92"

.PHONY: setup demo test bench clean-venv
setup: $(VENV)/.ssd_r34_setup

$(VENV)/.ssd_r34_setup: setup.py Makefile
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

test: setup
	$(PY) -m pytest tests -q

bench: setup
	$(PY) benchmarks/run_all.py
