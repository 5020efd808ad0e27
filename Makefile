# hmmbook: `make book` builds the website, `make test` runs every test. Both create and reuse .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HMMLIB_SOURCES := $(wildcard hmmlib/*.py hmmlib/*/*.py)
JOBS ?= 2

.PHONY: book book-strict test test-unit test-notebooks bench lab clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $@

# jupyter-cache only notices changes to code cells: clear it whenever hmmlib changes.
_build/.hmmlib-stamp: $(HMMLIB_SOURCES)
	rm -rf .jupyter_cache
	mkdir -p _build && touch $@

## Build the website (executes every chapter at the default preset) into _build/html/index.html.
book: $(STAMP) _build/.hmmlib-stamp
	$(BIN)/jupyter-book build .
	@echo "Open _build/html/index.html"

## The same, with warnings as errors (what CI runs).
book-strict: $(STAMP) _build/.hmmlib-stamp
	$(BIN)/jupyter-book build . -W --keep-going

## Unit tests plus every notebook under nbval, at the ci preset.
test: $(STAMP)
	HMMBOOK_PRESET=ci OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(JOBS) --dist loadscope \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider tests book

test-unit: $(STAMP)
	HMMBOOK_PRESET=ci $(BIN)/python -m pytest -p no:cacheprovider tests

test-notebooks: $(STAMP)
	HMMBOOK_PRESET=ci $(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider book

## Benchmarks (numbers side by side with the reference libraries).
bench: $(STAMP)
	$(BIN)/python benchmarks/inference.py

## Open the notebooks in JupyterLab.
lab: $(STAMP)
	$(BIN)/jupyter lab book/

clean:
	rm -rf _build .jupyter_cache
