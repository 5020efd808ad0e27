# hmmbook: `make book` builds the website, `make test` runs every test. Both create and reuse .venv.
# The pins in requirements.txt need Python >= 3.11: the first of python3.11, python3.12, python3.13, python3
# found is used, and the build stops with a message if it is older (e.g. macOS's system Python 3.9).
# Override with `make PYTHON=/path/to/python3.11 ...`.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HMMLIB_SOURCES := $(wildcard hmmlib/*.py hmmlib/*/*.py)
JOBS ?= 2
STUDENT_BRANCH ?= student
GRADING_PRESET ?= ci

.PHONY: book book-strict student test verify-ci test-ray test-unit test-notebooks test-browser check-binder check-wheel bench lab clean check-python

# Website builds: no progress bars in executed chapters (tqdm >= 4.66 reads TQDM_DISABLE; the book's
# local extension sets the same default when jupyter-book is run directly).
book book-strict student: export TQDM_DISABLE = 1

check-python:
	@test -n "$(PYTHON)" || { echo "error: no python3 found; install Python 3.11 (see book/running.md)" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "error: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); hmmbook's pinned" >&2; \
		echo "       requirements need Python >= 3.11. Install Python 3.11 (macOS: brew install python@3.11;" >&2; \
		echo "       see book/running.md) and run: make PYTHON=python3.11 ..." >&2; exit 1; }

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(MAKE) --no-print-directory check-python
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $@

# jupyter-cache only notices changes to code cells: clear it whenever hmmlib (or the book's execution
# settings in book/_ext) changes, and Sphinx's saved environment too (otherwise Sphinx rereads only the
# changed sources, so the notebooks would not be executed again with the new hmmlib).
_build/.hmmlib-stamp: $(HMMLIB_SOURCES) book/_ext/hmmbook_site.py
	rm -rf .jupyter_cache _build/student_src/.jupyter_cache _build/.doctrees _build/student_src/_build/.doctrees
	mkdir -p _build && touch $@

## Build the website (executes every chapter at the default preset) into _build/html/index.html.
book: $(STAMP) _build/.hmmlib-stamp
	$(BIN)/jupyter-book build .
	@echo "Open _build/html/index.html"

## The same, with warnings as errors (what CI runs).
book-strict: $(STAMP) _build/.hmmlib-stamp
	$(BIN)/jupyter-book build . -W --keep-going

## Student edition: every solution removed. Website in _build/student/html, notebooks in
## _build/student/notebooks; its launch buttons open branch $(STUDENT_BRANCH) (see book/instructors.md).
## Also one otter-grader assignment per chapter with gradable exercises in _build/assignments/<chapter>/dist:
## the student notebook and the autograder zip for Gradescope; submissions are graded at $(GRADING_PRESET).
student: $(STAMP) _build/.hmmlib-stamp
	$(BIN)/python tools/make_student.py --branch $(STUDENT_BRANCH) --out _build/student_src \
		--notebooks _build/student/notebooks
	cd _build/student_src && ../../$(BIN)/jupyter-book build . -W --keep-going
	rm -rf _build/student/html && cp -r _build/student_src/_build/html _build/student/html
	$(BIN)/python tools/make_student.py --check _build/student
	$(BIN)/python tools/make_assignments.py --out _build/assignments --preset $(GRADING_PRESET)
	@echo "Open _build/student/html/index.html; student notebooks are in _build/student/notebooks"
	@echo "Course assignments (otter-grader): _build/assignments/<chapter>/dist/{student,autograder} (book/instructors.md)"

## Unit tests plus every notebook under nbval, at the ci preset.
test: $(STAMP)
	HMMBOOK_PRESET=ci OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(JOBS) --dist loadscope \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider tests book

## Every committed ci record regenerates exactly (python -m hmmlib.experiments.reproduce verify; a few minutes).
verify-ci: $(STAMP)
	HMMBOOK_PRESET=ci OMP_NUM_THREADS=1 $(BIN)/python -m hmmlib.experiments.reproduce verify all --preset ci --workers $(JOBS)

## The pipeline on a local Ray instance gives the same records as one process (installs the optional Ray extra).
test-ray: $(STAMP)
	$(BIN)/python -m pip install -q "ray==2.60.0"
	HMMBOOK_PRESET=ci HMMBOOK_TEST_RAY=1 $(BIN)/python -m pytest -p no:cacheprovider -m ray -rs tests/test_pipeline.py

test-unit: $(STAMP)
	HMMBOOK_PRESET=ci $(BIN)/python -m pytest -p no:cacheprovider tests

test-notebooks: $(STAMP)
	HMMBOOK_PRESET=ci $(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider book

## Load every page of the built website (_build/html) in headless Chromium, offline (after `make book`).
test-browser: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider tests/browser/check_site_browser.py

## Does binder/requirements.txt resolve for Binder's Python (binder/runtime.txt)? Needs PyPI.
check-binder: $(STAMP)
	PYTHON=$(BIN)/python tools/check_binder.sh

## Colab-like: build the wheel, install it into a fresh environment outside the checkout (offline, reusing .venv's
## packages), run every chapter there at the ci preset.
check-wheel: $(STAMP)
	PYTHON=$(BIN)/python tools/check_wheel.sh

## Benchmarks (numbers side by side with the reference libraries).
bench: $(STAMP)
	$(BIN)/python benchmarks/inference.py

## Open the notebooks in JupyterLab.
lab: $(STAMP)
	$(BIN)/jupyter lab book/

clean:
	rm -rf _build .jupyter_cache
