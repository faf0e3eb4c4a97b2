# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: help install demo test test-unit lint bench-verify clean down

help:
	@echo "make demo   - set up, run the whole pipeline on the embedded stack, print a summary"
	@echo "make test   - set up and run the test suite (starts its own embedded stack)"
	@echo "make lint   - ruff check"
	@echo "make down   - stop an embedded stack left running by 'attest dev up'"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/attest demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration"

lint: $(STAMP)
	$(BIN)/ruff check .

down: $(STAMP)
	$(BIN)/attest dev down

clean: down
	rm -rf .attest
