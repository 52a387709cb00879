# The two commands a newcomer needs: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit e2e chaos bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check archiver tests scripts benchmarks
	$(BIN)/ruff format --check archiver tests scripts benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q -n 2 --dist worksteal -m "not chaos and not bench"

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

e2e: $(STAMP)
	$(BIN)/pytest -q tests/e2e

# The heavy fault, crash and soak runs; ends with one line of figures.
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos

# Throughput, overlap, memory and checkpoint-scale benchmarks; prints a table. Then the frame
# walker's cost, `audit` over 10,000 objects on SeaweedFS, and webhook freshness (hint to
# archived, p50/p95/max).
bench: $(STAMP)
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.audio_walk
	$(BIN)/python -m benchmarks.audit_scale
	$(BIN)/python -m benchmarks.rebuild_scale
	$(BIN)/python -m benchmarks.freshness

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .demo build *.egg-info
