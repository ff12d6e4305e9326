# Two commands work on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# img2dataset and imagededup pull in torch, and coremltools crashes on import when torch
# sits in the same environment, so the comparison tools live in their own venv.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed-stamp

.PHONY: install test test-slow lint bench-env clean

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
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

$(BENCH_STAMP): Makefile
	test -x $(BENCH_VENV)/bin/python || $(PY) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q 'img2dataset>=1.45,<2' 'imagededup>=0.3.2,<0.4'
	touch $(BENCH_STAMP)

bench-env: $(BENCH_STAMP)

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .ruff_cache

# The whole chain offline: glyphs A–J -> curate -> EfficientNet-Lite0 -> Core ML/TFLite/ONNX -> bench.
.PHONY: demo
demo: $(STAMP)
	$(BIN)/pocketml run examples/demo.toml --run-dir runs/demo
