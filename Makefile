# The two commands of the README are `make book` and `make test`; each creates .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Hash of the library: the book's execution cache does not notice library changes,
# so `make book` clears it whenever this hash changes.
LIBHASH := $(shell cat ddpm_lib/*.py ddpm_lib/*/*.py 2>/dev/null | sha256sum | cut -c1-16)

.PHONY: help venv test test-fast test-notebooks book book-force test-site strip benchmarks clean

help:
	@echo "make test        install into $(VENV) if needed, run unit tests and every notebook (smoke profile)"
	@echo "make book        install if needed, execute every notebook (default profile), build _build/html"
	@echo "make book-force  like make book, but re-execute every notebook"
	@echo "make test-site   build the book and check every page in headless Chromium"
	@echo "make strip       remove outputs from the notebooks and refresh their Colab header cells"
	@echo "make benchmarks  run benchmarks/*.py and write benchmarks/results/*.json"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# torch's CUDA build and its libraries take about 7 GB in the venv: a full disk is the
	@# usual cause of a failed install, so say how much room there is.
	@$(PY) -m pip install -q -e ".[book,test,dev]" || { \
	  echo "pip install failed. It needs about 7 GB of free disk; free here: $$(df -h --output=avail . | tail -1)."; \
	  echo "Free some space (old clones' .venv folders are the usual suspects) and run make again."; \
	  exit 1; }
	@touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	DDPM_BOOK_PROFILE=smoke MPLBACKEND=Agg $(PY) -m pytest

test-fast: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest tests -o addopts="-ra -p no:cacheprovider"

test-notebooks: $(STAMP)
	DDPM_BOOK_PROFILE=smoke $(PY) -m pytest notebooks

book: $(STAMP)
	@mkdir -p _build
	@if [ "$$(cat _build/.libhash 2>/dev/null)" != "$(LIBHASH)" ]; then \
	  echo "ddpm_lib changed since the last build: clearing the execution cache"; \
	  rm -rf _build/.jupyter_cache; fi
	@# Written before the build: an interrupted or failed build keeps the chapters it executed.
	@echo "$(LIBHASH)" > _build/.libhash
	@echo "Executing the chapters that changed (each prints 'Executing notebook' and then its time)."
	$(VENV)/bin/jupyter-book build . --builder html
	@echo "Execution time per chapter:"
	@$(PY) tools/book_times.py
	@echo "The book is at file://$(CURDIR)/_build/html/index.html"

book-force: $(STAMP)
	rm -rf _build/.jupyter_cache
	$(MAKE) book

# Needs Debian's chromium (`apt-get install chromium`), which Playwright drives: checked
# first, so that a missing browser does not wait for the book to build.
test-site: $(STAMP)
	@$(PY) tests/site/check_site.py --find-chromium
	$(MAKE) book
	$(PY) tests/site/check_site.py _build/html

strip: $(STAMP)
	$(PY) tools/nbtool.py fix

benchmarks: $(STAMP)
	for f in benchmarks/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf _build
