# Marquee: two commands on a fresh machine — `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
UV_VERSION := 0.9.5
APT_PACKAGES := openjdk-17-jre-headless maven prometheus kcat wrk postgresql chromium fonts-dejavu-core podman runc debootstrap
STAMP := .cache/stamps

.PHONY: help setup setup-apt setup-python setup-kafka demo up down test test-unit test-integration bench lint fmt typecheck clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP):
	@mkdir -p $(STAMP)

setup: setup-apt setup-python setup-kafka ## install everything the tests and the demo need (quick when cached)

setup-apt: | $(STAMP)
	@# "install ok installed" only: a removed package keeps its config files and dpkg -s finds it.
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

setup-python: | $(STAMP)
	@command -v uv >/dev/null 2>&1 && uv --version | grep -q "$(UV_VERSION)" || python3 -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"
	@uv sync --frozen --all-extras --quiet

setup-kafka:
	@scripts/kafka.sh ensure-jars

demo: setup ## run a real A/B experiment end to end (~10 min): the monitor's verdict against the truth
	@$(PY) -m scripts.demo

up: setup ## start the whole stack, leave it running and print its addresses ('make down' stops it)
	@$(PY) -m scripts.stack up

down: ## stop everything 'make up' (or 'scripts.demo --keep') started; safe to repeat
	@$(PY) -m scripts.stack down

test: setup ## set up, lint, type-check and pass every test (unit and integration)
	@# The deploy tests need the cluster's Go binaries and the images: on a cold machine minutes
	@# of building, done here in the background at the lowest priority while lint, mypy and the
	@# other tests run (they mostly wait on services).  The deploy tests run last and wait for it
	@# (both scripts hold a lock while building); a warm machine only checks versions and hashes.
	@mkdir -p .run; \
	scripts/cluster.sh build > .run/prebuild-cluster.log 2>&1 & \
	scripts/images.sh build > .run/prebuild-images.log 2>&1 &
	@$(MAKE) --no-print-directory lint typecheck
	@# pytest exits 5 when it collected nothing: for `make test` that is a failure, said plainly.
	@$(PY) -m pytest -q --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; that is a failure"; fi; \
	exit $$rc

test-unit: setup-python ## only the tests that need no running service
	@$(PY) -m pytest -q -m "not integration"

test-integration: setup ## only the integration tests (real Kafka, Prometheus on loopback)
	@$(PY) -m pytest -q -m integration

bench: setup ## run the benchmarks; JSON results under benchmarks/results/
	@$(PY) -m benchmarks.run $(BENCH)

lint: ## ruff lint and format check; every import declared in its service's extra
	@.venv/bin/ruff check services tests benchmarks scripts
	@.venv/bin/ruff format --check services tests benchmarks scripts
	@$(PY) -m scripts.check_deps

typecheck: ## mypy (strict on services/common)
	@.venv/bin/mypy services

fmt: ## format and auto-fix
	@.venv/bin/ruff format services tests benchmarks scripts
	@.venv/bin/ruff check --fix services tests benchmarks scripts

clean: ## stop local services and remove run folders
	-@$(PY) -m scripts.stack down
	-@scripts/kafka.sh stop
	-@scripts/prometheus.sh stop
	rm -rf .run

# Deployment (issue 14): images with podman, a local Kubernetes cluster (kwok) on loopback.
.PHONY: images cluster-build cluster-up cluster-down
images: ## build every service image with podman (deploy/Containerfile; cached layers)
	@scripts/images.sh build

cluster-build: ## build (once, cached) the cluster's binaries, helm and promtool from Go modules
	@scripts/cluster.sh build

cluster-up: ## build (once, cached) and start a kwok Kubernetes cluster on loopback
	@scripts/cluster.sh up
	@scripts/cluster.sh env

cluster-down: ## stop and delete the local kwok cluster
	@scripts/cluster.sh down
