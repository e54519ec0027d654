# Two entry points, both self-installing (see README):
#   make demo  — local simulator, a real bulk import, a summary
#   make test  — lint, type-check and the whole test suite
#   make report-demo — a ramp against the simulator, its load report checked in
#                      headless Chromium (not part of make test: it takes a minute)
#   make metrics-demo — a --concurrency auto run scraped by Prometheus, its graph
#                       page rendered in headless Chromium (the README's screenshot)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# One pytest process per core, each with a simulator of its own; a test file's
# tests stay together in one process (they share its simulator's inventory).
PYTEST_ARGS ?= -n auto --dist loadfile

.PHONY: demo report-demo metrics-demo test lint typecheck pytest deps system-deps clean

demo: deps
	$(BIN)/python demo/demo.py

report-demo: deps
	PYTHON=$(BIN)/python scripts/report-demo.sh

metrics-demo: deps
	CHROMIUM=$$(scripts/ensure-chromium.sh) $(BIN)/python scripts/metrics_demo.py

test: deps lint typecheck pytest

lint: deps
	$(BIN)/ruff check asyncovf tests demo $(wildcard benchmarks)

typecheck: deps
	$(BIN)/mypy

pytest: deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

deps: system-deps $(STAMP)

system-deps:
	@scripts/ensure-system-deps.sh

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache demo-out
