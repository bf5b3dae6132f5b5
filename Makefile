# One way to run things, the same locally and in CI.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install tools services quickstart test test-unit test-e2e test-browser lint crds crds-check bench bench-loop \
	bench-events bench-retention bench-traces bench-console bench-drift bench-canary bench-argo console console-check browser cluster-up cluster-down images clean

help:
	@echo "make quickstart   install and run the quickstart workflow locally (no cluster, no API key)"
	@echo "make test         install everything, bring up the local cluster, run unit and e2e tests"
	@echo "make test-unit    unit tests only (fast, no network; builds the Go test tools first)"
	@echo "make tools        helm, kstatus, argocd-health: Go tools the tests run, built once into the cache"
	@echo "make services     PostgreSQL and nats-server (Debian), PostgreSQL + pgvector (pgserver): servers the tests start"
	@echo "make lint         ruff, mypy --strict, import-linter layer contracts"
	@echo "make bench        benchmarks with their competitors, side by side"
	@echo "make crds         regenerate crds/ from the pydantic models"
	@echo "make console      build the console's page (console-ui/, Node) into operator/agentflow/console/static"
	@echo "make test-browser the console in Debian's Chromium (Playwright; make browser installs chromium)"
	@echo "make cluster-up / cluster-down / images   the local Kubernetes of tests/e2e/cluster"

$(VENV)/.runner: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(VENV)/.runner $@

install: $(VENV)/.dev

quickstart: $(VENV)/.runner
	$(BIN)/agentflow run examples/manifests/quickstart.yaml

# Go tools the tests run (built from the Go module proxy into /var/cache/agentflow once, then reused): helm renders
# the chart, kstatus and argocd-health compute what Flux and Argo CD make of our statuses. Built before any test,
# so nothing skips for want of something this Makefile builds. Also Debian's bubblewrap (installed as root).
tools:
	$(PYTHON) tests/services/bwrap.py  # bubblewrap: the local runner's container isolation, tested in unit tests
	bash tests/e2e/tools/helm.sh >/dev/null
	bash tests/e2e/tools/gotool.sh kstatus >/dev/null
	bash tests/e2e/tools/gotool.sh argocd-health >/dev/null
	bash tests/e2e/cluster/build.sh kubernetes etcd kwok  # kwok control planes: an e2e test, tests/integration/test_shards.py, the benches

# The servers the integration and e2e tests start on loopback (Debian's postgresql and nats-server, and PostgreSQL
# with pgvector from the PyPI package pgserver, into the venv the tests run in), installed
# before any test so that none skips on a cold machine (in CI a missing one is an error).
services:
	AGENTFLOW_TEST_PYTHON=$(if $(wildcard $(BIN)/python),$(BIN)/python,) $(PYTHON) tests/services/install.py

# JUnit XML of each pytest run (.ci/run counts the skipped tests and their reasons from them).
REPORTS ?= .reports
PYTEST = $(BIN)/pytest -rs

test-unit: install tools
	$(PYTEST) tests/unit -q --junitxml=$(REPORTS)/unit.xml

test-e2e: install tools services cluster-up
	$(PYTEST) tests/e2e -q -m e2e --junitxml=$(REPORTS)/e2e.xml

test-integration: install services
	$(PYTEST) tests/integration -q -m integration --junitxml=$(REPORTS)/integration.xml

# Debian's Chromium for the browser tests (Playwright drives it; nothing is downloaded by Playwright itself).
CHROMIUM ?= /usr/bin/chromium
browser:
	test -x $(CHROMIUM) || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

test-browser: install browser
	$(PYTEST) tests/browser -q --junitxml=$(REPORTS)/browser.xml

test: install tools services browser
	rm -rf $(REPORTS)
	$(PYTEST) tests/unit tests/integration tests/browser -q --junitxml=$(REPORTS)/unit.xml
	$(MAKE) cluster-up
	$(PYTEST) tests/e2e -q -m e2e --junitxml=$(REPORTS)/e2e.xml

lint: install console-check
	$(BIN)/ruff check operator tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# The console's page: React + TypeScript + Vite in console-ui/, built into the Python package (committed, so
# `pip install` and `agentflow ui` need no Node). console-check rebuilds from the lock and fails if the shipped
# build differs (the build is deterministic: fixed file names, no timestamps).
console-ui/node_modules/.package-lock.json: console-ui/package-lock.json
	cd console-ui && npm ci --no-audit --no-fund
console: console-ui/node_modules/.package-lock.json
	cd console-ui && npm run build
console-check: console
	git diff --exit-code --stat -- operator/agentflow/console/static || \
		(echo "the shipped console build differs from console-ui/: run make console and commit it" && exit 1)
	test -z "$$(git status --porcelain -- operator/agentflow/console/static)" || \
		(echo "untracked files in the console build: run make console and commit it" && exit 1)

crds: install
	$(BIN)/python -m agentflow.commands.crds --out crds
	rm -f charts/agentflow/charts/agentflow-crds/crds/*.yaml && cp crds/*.yaml charts/agentflow/charts/agentflow-crds/crds/

crds-check: install
	$(BIN)/python -m agentflow.commands.crds --check --out crds

bench: install
	$(BIN)/python bench/engine_bench.py

bench-loop: install
	$(BIN)/python bench/agent_loop_bench.py

bench-events: install services
	$(BIN)/python bench/events_bench.py

bench-retention: install services
	$(BIN)/python bench/retention_bench.py

bench-traces: install
	$(BIN)/python bench/trace_bench.py

bench-drift: install
	$(BIN)/python bench/drift_bench.py

bench-canary: install
	$(BIN)/python bench/canary_bench.py
bench-console: install browser
	$(BIN)/python bench/console_bench.py

bench-operator: install
	bash tests/e2e/cluster/build.sh kubernetes etcd kwok
	$(BIN)/python bench/operator_bench.py

# AgentFlow vs Argo Workflows on one private kwok control plane (root); Argo's controller is built once into the cache.
bench-argo: install
	bash tests/e2e/cluster/build.sh kubernetes etcd kwok argo-workflows
	$(BIN)/python bench/argo_race.py

# The LiteLLM proxy runs from a venv of its own (its pins are not the project's); made once, kept.
BENCH_VENV ?= /var/cache/agentflow/bench-venv
LITELLM_PROXY_VERSION ?= 1.106.2

$(BENCH_VENV)/bin/litellm:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q 'litellm[proxy]==$(LITELLM_PROXY_VERSION)'

bench-gateway: install $(BENCH_VENV)/bin/litellm
	$(BIN)/python bench/gateway_bench.py --litellm $(BENCH_VENV)/bin/litellm

cluster-up:
	bash tests/e2e/cluster/up.sh

cluster-down:
	bash tests/e2e/cluster/down.sh

images:
	bash tests/e2e/cluster/images.sh

clean:
	rm -rf .agentflow .pytest_cache .mypy_cache .ruff_cache
