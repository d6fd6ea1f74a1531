# Two commands do all the set-up on a fresh machine:
#   make demo   installs, starts what it needs, ingests a sample set through all four services
#   make test   installs and runs the unit, integration and end-to-end tests
# Both need PostgreSQL at DATABASE_URL (default: the local server, user postgres, database test).

SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
export DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test

.PHONY: install demo test lint typecheck check bench clean

install:
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
	$(UV) sync --all-packages --frozen

demo: install
	$(UV) run --frozen ingest demo

# The outage cases wait out minutes-long faults: they run in parallel beside the rest.
test: install
	$(UV) run --frozen pytest -n 4 --dist loadgroup

lint: install
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

typecheck: install
	$(UV) run --frozen mypy libs/common/src services/*/src tools/cli/src tests

check: lint typecheck test

bench: install
	$(UV) run --frozen python bench/render.py

clean:
	rm -rf .venv demo-output .pytest_cache .mypy_cache .ruff_cache
