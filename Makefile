# diffnb: build the executable book and run every check.
#
#   make book        create .venv if needed, execute the notebooks, build _build/html
#   make test        unit tests, notebooks (nbmake), book build with -W, browser check; ends with
#                    a table of its stages' wall seconds (scripts/stages.py)
#   make test-fast   unit tests without the full-budget fits (the developer loop)
#   make test-slow   the full-budget fits whose figures the chapters and docstrings cite (weekly CI)
#   make lab         JupyterLab; notebooks/*.md open as notebooks (jupytext pairing)
#   make test-min    unit tests (not slow) against the lowest supported versions (.venv-min)
#   make bench       check the PyTorch baseline, then time training and sampling (installs torch)
#   make serve       preview the built book on http://127.0.0.1:8000
#   make setup       only create or update .venv
#   make notebooks   make or refresh notebooks/*.ipynb from notebooks/*.md (jupytext --sync)
#   make lint        ruff on the package and on the notebooks' code; `make format` rewrites the package and the notebooks' code
#   make clean       remove _build and the generated .ipynb files
#
# LOCK=requirements/lock.txt pins every package; `make test LOCK=` installs the newest
# versions instead (the weekly CI run).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV ?= .venv
LOCK ?= requirements/lock.txt
JOBS ?= 2
BIN := $(VENV)/bin
# The notebook kernels and the tools run from the project environment.
export PATH := $(abspath $(BIN)):$(PATH)
# JAX keeps every compiled program on disk and loads it when the same program is compiled again,
# in any test or chapter of any later run: most of a unit test's time is compilation, and many
# chapters compile the same samplers and metrics. A loaded program is the compiled one, so the
# numbers do not change. `make clean` empties it with the rest of _build.
export JAX_COMPILATION_CACHE_DIR ?= $(abspath _build/jax-cache)
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 0
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES ?= 0

# Reinstall when the package metadata or the lock changes.
STAMP := $(VENV)/.diffnb-installed
PIP_PINS := $(if $(LOCK),-c $(LOCK),--upgrade --upgrade-strategy eager)

# The intro is an executed page too (its first figure).
NOTEBOOKS := intro.md $(wildcard notebooks/*.md)
HTML := _build/html
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

MIN_VENV ?= .venv-min

.PHONY: test-min bench help setup browser notebooks execute book html test test-unit test-fast \
        test-slow test-notebooks check-book lab serve lint format clean

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

# ---------------------------------------------------------------- environment
setup: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "python3 -m venv failed: installing Debian's python3-venv"; rm -rf $(VENV); \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y python3-venv && \
	  $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet $(PIP_PINS) -e '.[book,test]'
	@touch $@

# Debian's chromium and chromedriver for the browser check, installed only when missing.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  $(SUDO) apt-get update && \
	  $(SUDO) apt-get install -y --no-install-recommends chromium chromium-driver; \
	fi

# ---------------------------------------------------------------- notebooks
# Make or refresh notebooks/*.ipynb from notebooks/*.md (either side may be the newer one).
notebooks: $(STAMP)
	jupytext --sync $(NOTEBOOKS)

# Execute each notebook once, with nbmake, writing the outputs into its .ipynb; a notebook
# whose .md and diffnb/ sources are unchanged since its last passing run is skipped.
execute: $(STAMP)
	$(BIN)/python scripts/execute_notebooks.py --jobs $(JOBS) $(NOTEBOOKS)

test-notebooks: execute

# ---------------------------------------------------------------- book
# The book renders the executed .ipynb files; _config.yml turns execution off.
book: execute
	$(MAKE) html

# The book from the notebooks as last executed.
html: $(STAMP)
	jupyter-book build . -n -W --keep-going

# First the checker's own test (tests/book_check/: a clean page passes, a page with each
# defect fails as that defect), then the built book at a 1280-px window.
check-book: browser $(STAMP)
	$(BIN)/python scripts/check_book.py --self-test
	$(BIN)/python scripts/check_book.py $(HTML)

# ---------------------------------------------------------------- tests
# The unit tests run in JOBS processes (pytest-xdist), as the notebooks do: one JAX process
# leaves most of the second core idle on small networks. `slow` tests (full-budget fits whose
# figures are cited elsewhere) run in `make test-slow`, which the weekly workflow runs.
test-unit: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow and not torch" -n $(JOBS) --dist worksteal \
	  --durations=15

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow and not torch and not long"

test-slow: $(STAMP)
	$(BIN)/python -m pytest tests -m "slow and not torch" -n $(JOBS) --dist worksteal --durations=0

# The package's floors (requirements/min.txt) in a venv of their own.
test-min:
	@test -x $(MIN_VENV)/bin/python || $(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet -r requirements/min.txt -c requirements/min.txt \
	  -e . 'pytest>=8.3' 'pytest-xdist>=3.6'
	$(MIN_VENV)/bin/python -m pytest tests -m "not slow and not torch"

test:
	@$(PYTHON) scripts/stages.py "setup=$(MAKE) setup browser" "unit=$(MAKE) test-unit" \
	  "notebooks=$(MAKE) execute" "build=$(MAKE) html" "browser check=$(MAKE) check-book"

# ---------------------------------------------------------------- working on the book
lab: notebooks
	jupyter lab notebooks

serve:
	$(BIN)/python -m http.server --bind 127.0.0.1 --directory $(HTML) 8000

BENCH_STAMP := $(VENV)/.diffnb-bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet $(PIP_PINS) -e '.[book,test,bench]'
	@touch $@

bench: $(BENCH_STAMP)
	$(BIN)/python -m pytest tests/test_bench.py
	$(BIN)/python benchmarks/speed.py $(BENCH_ARGS)

# The notebooks' code is linted with the same settings (scripts/lint_notebooks.py: jupytext
# makes each .md a notebook in a temporary folder, ruff checks it cell by cell).
lint: $(STAMP)
	ruff check diffnb tests scripts benchmarks
	ruff format --check diffnb tests scripts benchmarks
	$(BIN)/python scripts/lint_notebooks.py $(NOTEBOOKS)

format: $(STAMP)
	ruff check --fix diffnb tests scripts benchmarks
	ruff format diffnb tests scripts benchmarks
	$(BIN)/python scripts/lint_notebooks.py --fix $(NOTEBOOKS)

clean:
	rm -rf _build intro.ipynb notebooks/*.ipynb notebooks/.ipynb_checkpoints .ruff_cache
