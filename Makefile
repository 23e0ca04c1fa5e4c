# Two set-up commands: `make demo` (build a demo corpus and export it) and `make test` (ruff, then pytest).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo

.PHONY: demo test lint install bench clean tools

$(BIN)/pipeline: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps bratiaa==0.1.4
	touch $@

install: $(BIN)/pipeline

# Jing (Java) validates TEI against tei_all: lxml cannot compile it. Installed with apt as root.
tools:
	@command -v jing >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jing >/dev/null; } \
		|| { echo "make: jing is missing: install the Debian package jing (the TEI tests need it)" >&2; exit 1; }; }

demo: install
	rm -rf $(DEMO)/corpus.sqlite $(DEMO)/corpus.media
	mkdir -p $(DEMO)
	$(BIN)/pipeline demo $(DEMO)/corpus.sqlite --documents 2 --parts 5
	rm -rf $(DEMO)/exports
	$(BIN)/pipeline run configs/demo.toml --set corpus=$(DEMO)/corpus.sqlite --set archive.directory=$(DEMO)/exports
	$(BIN)/pipeline verify $(DEMO)/exports/*.zip $(DEMO)/exports/*.txt
	@echo "Demo exports are in $(abspath $(DEMO)/exports)"

test: install tools
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python -m pytest benchmarks --benchmark-enable -q -p no:cacheprovider

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .benchmarks
