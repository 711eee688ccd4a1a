# bert_book: every target sets itself up on a fresh machine (a .venv with the pinned toolchain).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# one constraints file pins the whole toolchain; torch 2.13.0 is the local CPU build on these machines
PIP_INSTALL := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt
NBVAL_FLAGS ?= --nbval-lax --nbval-current-env -p no:cacheprovider
export MPLBACKEND := Agg

.PHONY: setup demo test export-check test-nbs test-py test-slow bench clean help

help:
	@echo "make demo   set up, then run the book's main job on its bundled data"
	@echo "make test   set up, check export sync, run every notebook under nbval, then pytest tests/"
	@echo "make bench  set up, then run the benchmarks"

$(STAMP): constraints.txt settings.ini setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m bert_book.demo

test: setup export-check test-nbs test-py

# nbdev_export must reproduce bert_book/ exactly: notebooks and modules never disagree
export-check: setup
	$(PY) tools/check_export.py

test-nbs: setup
	IN_TEST=1 $(PY) -m pytest $(NBVAL_FLAGS) nbs/

test-py: setup
	$(PY) -m pytest tests/

# also run the cells marked #| slow
test-slow: setup
	RUN_SLOW=1 IN_TEST=1 $(PY) -m pytest $(NBVAL_FLAGS) nbs/
	RUN_SLOW=1 $(PY) -m pytest tests/

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info _docs _proc
