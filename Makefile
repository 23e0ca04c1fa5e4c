# Two set-up commands: `make demo` (build a demo corpus and export it) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo

.PHONY: demo test lint install bench clean

$(BIN)/pipeline: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/pipeline

demo: install
	rm -rf $(DEMO)/corpus.sqlite $(DEMO)/corpus.media
	$(BIN)/pipeline demo $(DEMO)/corpus.sqlite --documents 2 --parts 5
	mkdir -p $(DEMO)/exports
	$(BIN)/pipeline export --corpus $(DEMO)/corpus.sqlite --document 1 --format alto --images -o $(DEMO)/exports/
	$(BIN)/pipeline export --corpus $(DEMO)/corpus.sqlite --document 1 --format page -o $(DEMO)/exports/
	$(BIN)/pipeline export --corpus $(DEMO)/corpus.sqlite --document 1 --format text -o $(DEMO)/exports/
	$(BIN)/pipeline verify $(DEMO)/exports/*.zip
	@echo "Demo exports are in $(abspath $(DEMO)/exports)"

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python -m pytest benchmarks --benchmark-enable -q

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .benchmarks
