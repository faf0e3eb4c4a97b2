# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: help install demo test test-unit test-faults soak lint bench-verify clean down

help:
	@echo "make demo   - set up, run the whole pipeline on the embedded stack, print a summary"
	@echo "make test   - set up and run the test suite (starts its own embedded stack)"
	@echo "make test-faults - the fault-injection suite (kills workers, Postgres, the broker);"
	@echo "              updates the table in docs/reliability.md"
	@echo "make soak   - mixed workload for SOAK_DURATION seconds (default 600), then integrity"
	@echo "make lint   - ruff check"
	@echo "make down   - stop an embedded stack left running by 'attest dev up'"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -qq --upgrade pip
	$(BIN)/pip install -qq -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/attest demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not faults"

# The fault cases restart workers, Postgres and the broker many times (about 6 minutes);
# each writes a row that the report turns into docs/reliability.md's table.
test-faults: $(STAMP)
	rm -f .attest/reliability/faults.json
	$(BIN)/python -m pytest -q -m faults tests/faults
	$(BIN)/python -m bench.reliability_report --update docs/reliability.md

SOAK_DURATION ?= 600
SOAK_RATE     ?= 0
soak: $(STAMP)
	$(BIN)/python -m cli.main bench soak --duration $(SOAK_DURATION) --rate $(SOAK_RATE)
	$(BIN)/python -m bench.reliability_report --update docs/reliability.md

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration"

lint: $(STAMP)
	$(BIN)/ruff check .

down: $(STAMP)
	$(BIN)/attest dev down

clean: down
	rm -rf .attest
