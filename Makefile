# Kluis: `make dev` runs it locally, `make test` installs what is missing and runs every check.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export KLUIS_DATA_DIR ?= $(CURDIR)/.kluis

.PHONY: help dev test test-fast lint bench cluster-build node-tools postgres system-packages clean clean-cache images

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

cluster-build: $(STAMP) ## Build (or reuse) the pinned Kubernetes, etcd, kwok and helm binaries
	@command -v go >/dev/null || { echo "Go 1.26 is required to build the local control plane" >&2; exit 1; }
	$(BIN)/kluis cluster build

node-tools: ## Install configurable-http-proxy (npm) into the cache, once per pinned version
	@.ci/node-tools >/dev/null

dev: $(STAMP) cluster-build node-tools ## Start Kluis locally: SQLite, the local Kubernetes control plane, the API
	$(BIN)/kluis dev

postgres: ## Install and start PostgreSQL on loopback for the tests
	@.ci/postgres

lint: $(STAMP) ## ruff, ruff format --check, mypy (strict) and import-linter contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

helm-lint: cluster-build ## helm lint --strict of helm/kluis with every values profile in helm/kluis/ci/
	@helm="$$($(BIN)/python -c 'from orchestrator.devcluster.build import ensure_built; print(ensure_built() / "helm")')"; \
	for values in helm/kluis/ci/*-values.yaml; do echo "== $$values"; "$$helm" lint --strict helm/kluis -f "$$values"; done

system-packages: ## Install the Debian packages the tests need (only the missing ones)
	@.ci/system-packages

test: system-packages $(STAMP) cluster-build node-tools lint ## Install what is missing, lint, then every test on SQLite and PostgreSQL
	pg_url="$$(.ci/postgres)" && KLUIS_TEST_POSTGRES_URL="$$pg_url" KLUIS_REQUIRE_POSTGRES=1 KLUIS_REQUIRE_BROWSER=1 $(BIN)/pytest

test-fast: $(STAMP) ## Tests that need neither the cluster nor PostgreSQL (quick feedback only)
	$(BIN)/pytest -m "not cluster and not slow"

bench: system-packages $(STAMP) cluster-build ## Benchmarks: ratios measured in one run, JSON in bench-results/
	pg_url="$$(.ci/postgres)" && KLUIS_BENCH_POSTGRES_URL="$$pg_url" $(BIN)/python -m bench

images: ## Build and check the container images with buildah, no Docker (IMAGES="hub workspace" for some)
	images/build $(IMAGES)

clean: ## Remove build outputs, caches and local state (not the compiled binaries)
	-$(BIN)/kluis cluster down 2>/dev/null
	rm -rf $(VENV) .kluis .pytest_cache .mypy_cache .ruff_cache .import_linter_cache bench-results build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

clean-cache: ## Also remove the compiled control-plane binaries (next build is cold)
	rm -rf "$${XDG_CACHE_HOME:-$$HOME/.cache}/kluis"
