# One way to run things, the same locally and in CI.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install quickstart test test-unit test-e2e lint crds crds-check bench cluster-up cluster-down images clean

help:
	@echo "make quickstart   install and run the quickstart workflow locally (no cluster, no API key)"
	@echo "make test         install everything, bring up the local cluster, run unit and e2e tests"
	@echo "make test-unit    unit tests only (fast, no network)"
	@echo "make lint         ruff, mypy --strict, import-linter layer contracts"
	@echo "make bench        benchmarks with their competitors, side by side"
	@echo "make crds         regenerate crds/ from the pydantic models"
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

test-unit: install
	$(BIN)/pytest tests/unit -q

test-e2e: install cluster-up
	$(BIN)/pytest tests/e2e -q -m e2e

test-integration: install
	$(BIN)/pytest tests/integration -q -m integration

test: install
	$(BIN)/pytest tests/unit tests/integration -q
	$(MAKE) cluster-up
	$(BIN)/pytest tests/e2e -q -m e2e

lint: install
	$(BIN)/ruff check operator tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

crds: install
	$(BIN)/python -m agentflow.models.crd --out crds
	rm -f charts/agentflow-crds/crds/*.yaml && cp crds/*.yaml charts/agentflow-crds/crds/

crds-check: install
	$(BIN)/python -m agentflow.models.crd --check --out crds

bench: install
	$(BIN)/python bench/engine_bench.py

bench-operator: install
	bash tests/e2e/cluster/build.sh kubernetes etcd kwok
	$(BIN)/python bench/operator_bench.py

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
