# Two commands set up a fresh machine: `make run` (the main job) and `make test` (the test suite).
# Both create or reuse the virtual environment .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv run test test-all lint bench lim clean valgrind

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Main job: a short training + evaluation run through the harness (W&B offline), then Lim's table.
run: $(STAMP)
	$(BIN)/python train.py steps=4096 eval.trials=32 logger=offline
	$(BIN)/python scripts/lim_heuristics.py --episodes 300

# The trace recorder's test runs a real program under valgrind (Debian package; root installs it here).
valgrind:
	@command -v valgrind >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; } || \
		{ echo "valgrind is missing: install it (apt-get install valgrind)"; exit 1; }

test: $(STAMP) valgrind
	$(BIN)/python -m pytest

test-all: $(STAMP) valgrind
	$(BIN)/python -m pytest -m ''

lint: $(STAMP)
	$(BIN)/ruff check dreamalloc tests scripts

bench: $(STAMP)
	$(BIN)/python scripts/bench_env.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
