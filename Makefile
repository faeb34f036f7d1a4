# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/cupmon: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

## Start the monitor on the built-in simulator (GUI; terminal view when no display).
run: $(BIN)/cupmon
	$(BIN)/cupmon --sim normal

## Install and run the whole test suite (offscreen Qt).
test: $(BIN)/cupmon
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

lint: $(BIN)/cupmon
	$(BIN)/ruff check .

bench: $(BIN)/cupmon
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
