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

# Programs the tests run besides Python: Jing (validates TEI against tei_all, which lxml cannot
# compile), Debian's Chromium (the browser test of `pipeline serve`, driven by Playwright; never
# `playwright install`) and PostgreSQL's server binaries (the tests start their own cluster).
# Installed with apt when missing and running as root; otherwise named in one line.
SYSTEM_PACKAGES = jing:jing chromium:chromium initdb:postgresql
tools:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
		command -v $$cmd >/dev/null || ls /usr/lib/postgresql/*/bin/$$cmd >/dev/null 2>&1 \
			|| missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else echo "make: missing Debian package(s):$$missing (the tests need them)" >&2; exit 1; fi; fi

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
