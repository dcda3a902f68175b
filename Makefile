# Two entry points: `make demo` runs the main job on the embedded synthetic data,
# `make test` runs the test-suite. Both create .venv with pip when it is missing.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint docs bench clean install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt torch torchvision
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fairtune-ray demo

lint: $(STAMP)
	$(BIN)/lint-imports --no-cache

test: $(STAMP) lint
	$(BIN)/python -m pytest -q --timeout=900 --durations=20 tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

docs: $(STAMP)
	$(BIN)/python -m fairtune_ray.config.reference

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .fairtune_cache runs mlruns.db
