# tickpipe — `make help` lists the targets. The quick start is `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
BIN := $(VENV)/bin
# Where prices come from (binance, coingecko, yahoo), offline on the source's simulator; LIVE=1 for the real service:
# make run SOURCE=yahoo; make run LIVE=1 SYMBOLS=btcusdt,ethusdt
SOURCE ?= binance
LIVE ?=
PYTEST_ARGS ?=
# pytest-xdist workers for make test, each with a local stack of its own (tests/conftest.py); 0: one process.
# One by default: on 2 cores two stacks make some end-to-end deadlines tight (README, Tests).
TEST_WORKERS ?= 0
# Local Kubernetes for make k8s-up / make dev: kind or minikube
K8S ?= kind

.PHONY: help setup setup-runtime run test test-fast lint fmt typecheck validate audit bench bench-full stack-up stack-down clean distclean k8s-up dev images k8s-smoke

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## install everything from the lock files (venv, jars, PostgreSQL, tools); fast when done
	@setup/setup.sh

setup-runtime: ## what running the pipeline needs: setup without the validation tools (helm, kubeconform, ...)
	@setup/setup.sh --runtime

run: setup-runtime ## run the whole pipeline locally, offline (SOURCE=binance|coingecko|yahoo; LIVE=1: the real one)
	@if [ "$(SOURCE)" = sim ]; then echo "SOURCE=sim is gone: offline is the default (make run [SOURCE=binance|coingecko|yahoo]), LIVE=1 is live" >&2; exit 2; fi
	@$(BIN)/tickpipe run --source $(SOURCE) $(if $(LIVE),--live) $(if $(SYMBOLS),--symbols $(SYMBOLS))

test: setup lint typecheck validate audit ## lint, type check, validate manifests, audit dependencies, then all tests
	@$(BIN)/pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) --durations=30 $(PYTEST_ARGS)

test-fast: setup ## unit tests only (no engines)
	@$(BIN)/pytest -m unit $(PYTEST_ARGS)

lint: setup ## ruff lint and format check (changes nothing)
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

fmt: setup ## format and auto-fix with ruff
	@$(BIN)/ruff format .
	@$(BIN)/ruff check --fix .

typecheck: setup ## mypy --strict on the package
	@$(BIN)/mypy

validate: setup ## render and validate charts, manifests, compose and skaffold config
	@scripts/validate.sh

audit: setup ## known vulnerabilities in the locked Python packages (pip-audit; dated exceptions in setup/audit)
	@setup/audit.sh

bench: setup-runtime ## quick benchmarks (~15 min: the features on/off pair takes ~10), results in BENCHMARKS.md
	@$(BIN)/python -m bench.run --quick

bench-full: setup-runtime ## full benchmarks
	@$(BIN)/python -m bench.run --full

stack-up: setup-runtime ## start the local engines only (Kafka, PostgreSQL, Flink)
	@$(BIN)/tickpipe stack up

stack-down: ## stop the local engines
	@if [ -x $(BIN)/tickpipe ]; then $(BIN)/tickpipe stack down; fi

k8s-up: setup ## local Kubernetes (K8S=kind or minikube) with the pinned operators (k8s/README.md)
	@K8S=$(K8S) k8s/up.sh

dev: ## skaffold dev loop on that cluster: build the stage images, deploy charts/tickpipe
	@command -v skaffold >/dev/null || { echo "dev: skaffold not found (https://skaffold.dev/docs/install/)"; exit 1; }
	@skaffold dev --profile $(K8S) --kube-context $(if $(filter minikube,$(K8S)),minikube,kind-tickpipe)

images: ## stage images for a registry + the packaged chart (REGISTRY=ghcr.io/you [TAG=] [PUSH=1]; k8s/images.sh)
	@REGISTRY=$(REGISTRY) TAG=$(TAG) PUSH=$(PUSH) k8s/images.sh

k8s-smoke: ## on a `make k8s-up` cluster: deploy with the simulator, prove rows, MAs and Grafana end to end
	@K8S=$(K8S) REGISTRY=$(REGISTRY) TAG=$(TAG) k8s/smoke.sh

clean: stack-down ## stop the stack and remove local data (.tickpipe: data, logs, checkpoints)
	@# As root, PostgreSQL's data may live outside .tickpipe (a folder its user can reach); the state dir names it.
	@if [ -f .tickpipe/postgres/server-dir ]; then rm -rf "$$(cat .tickpipe/postgres/server-dir)"; fi
	rm -rf .tickpipe

distclean: clean ## also remove downloaded dependencies (.venv, .deps)
	rm -rf $(VENV) .deps setup/timescaledb/node_modules setup/grafana/node_modules
