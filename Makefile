# Two commands do all set-up: `make demo` and `make test` (README.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
BASE_STAMP := $(VENV)/.base-installed
TEST_STAMP := $(VENV)/.test-installed
PYTEST_ARGS ?=

.PHONY: demo test venv clean-venv

venv: $(BASE_STAMP)

$(BASE_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q -e .
	touch $@

$(TEST_STAMP): $(BASE_STAMP)
	$(PIP) install -q -e '.[test]' 'torch==2.13.0'
	$(PIP) install -q --no-deps 'torchattacks==3.5.1'
	touch $@

demo: $(BASE_STAMP)
	$(BIN)/python experiments/demo.py

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
