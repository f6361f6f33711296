# Two commands set up a fresh machine: `make run` (the main job) and `make test` (the test suite).
# Both create or reuse the virtual environment .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv run test test-all lint bench lim clean valgrind app chromium test-browser app-screenshots

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,app]'
	touch $(STAMP)

venv: $(STAMP)

# Main job: a short training + evaluation run through the harness (W&B offline), then Lim's table.
run: $(STAMP)
	$(BIN)/python train.py steps=4096 eval.trials=32 logger=offline
	$(BIN)/python scripts/lim_heuristics.py --episodes 300

# The trace recorder's tests run real programs under valgrind, one of them a small pthread program they compile
# with gcc (Debian packages; root installs them here).
valgrind:
	@command -v valgrind >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; } || \
		{ echo "valgrind is missing: install it (apt-get install valgrind)"; exit 1; }
	@command -v gcc >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev >/dev/null; } || \
		{ echo "gcc is missing: install it (apt-get install gcc)"; exit 1; }

test: $(STAMP) valgrind
	$(BIN)/python -m pytest

test-all: $(STAMP) valgrind
	$(BIN)/python -m pytest -m ''

# The memory-map web app (Streamlit) on http://127.0.0.1:8501.
app: $(STAMP)
	$(BIN)/python -m dreamalloc.app

# The app's browser test needs Debian's chromium and chromium-driver (root installs them here).
chromium:
	@{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || \
		{ [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null && \
		command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || \
		{ echo "chromium / chromedriver are missing and could not be installed: as root, run" \
		"apt-get install chromium chromium-driver"; exit 1; }

test-browser: $(STAMP) chromium
	$(BIN)/python -m pytest -n 0 -rs tests/test_app_browser.py

# Screenshots of the app's pages for the docs (docs/img/app_*.png), taken in headless Chromium.
app-screenshots: $(STAMP) chromium
	$(BIN)/python scripts/app_screenshots.py

lint: $(STAMP)
	$(BIN)/ruff check dreamalloc tests scripts

bench: $(STAMP)
	$(BIN)/python scripts/bench_env.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
