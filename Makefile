# kafka-expose: the two commands a fresh machine needs are `make demo` and `make test`.
# Expensive builds (Kubernetes from the Go module proxy, Kafka jars from Maven Central) are cached
# outside the repo in $(KAFKA_EXPOSE_CACHE), keyed by version: a warm machine skips them.
SHELL := /bin/bash
PYTHON ?= python3
export KAFKA_EXPOSE_CACHE ?= $(HOME)/.cache/kafka-expose
PYTEST_ARGS ?=

.PHONY: load fleet check-tests-can-fail demo test test-fast test-cluster test-kafka deps tools lint bench fuzz-long audit clean

deps:  ## Python packages (the project, editable, with its test extras, pinned by requirements-test.lock)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements-test.lock
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps -e .

tools:  ## kube-apiserver, kube-controller-manager, etcd, helm 3 and 4, kustomize, external-dns, CoreDNS, Kafka jars, cert-manager (cached)
	bash tools/build-controlplane.sh >/dev/null
	bash tools/build-kustomize.sh >/dev/null
	bash tools/build-ecosystem.sh >/dev/null
	bash tools/build-kafka.sh >/dev/null
	bash tools/build-cert-manager.sh >/dev/null

demo: deps tools  ## local control plane + webhook + controller + a stock chart, and what it did
	$(PYTHON) scripts/demo.py

lint: deps
	$(PYTHON) -m ruff check webhook tests scripts bench
	$(PYTHON) -m ruff format --check webhook tests scripts bench
	$(PYTHON) -m mypy
	$(PYTHON) -c "from importlinter.cli import lint_imports_command; lint_imports_command()"  # the import rule (pyproject)

test: deps tools lint  ## every tier: unit, cluster (real control plane), kafka (real brokers)
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-fast: deps  ## the fast tier alone (no processes but the webhook server)
	$(PYTHON) -m pytest -m unit $(PYTEST_ARGS)

test-cluster: deps tools
	$(PYTHON) -m pytest -m cluster $(PYTEST_ARGS)

test-kafka: deps tools
	$(PYTHON) -m pytest -m kafka $(PYTEST_ARGS)

bench: deps
	$(PYTHON) bench/bench_core.py
	$(PYTHON) bench/bench_server.py

audit: deps  ## pip-audit of requirements.lock; skips (saying why) when its service answers for nothing
	$(PYTHON) -m pip install --quiet pip-audit
	$(PYTHON) -m pytest -q -rs tests/reliability/test_security.py -k audited

fuzz-long: deps  ## 100,000 hostile bodies over HTTPS, then the worst-case bodies (5-15 min)
	$(PYTHON) bench/fuzz_long.py --bodies 100000 --worst

load: deps tools  ## 200 brokers in 20 namespaces while the webhook is hammered at 200 req/s; 1,000 unrelated pods
	$(PYTHON) bench/load.py --namespaces 20 --per-namespace 10 --unrelated 1000

fleet: deps tools  ## broker StatefulSets growing to 500, 1,000, 2,000 and 5,000 brokers beside 5,000 unrelated pods (~25 min)
	$(PYTHON) bench/fleet.py --sizes $(or $(FLEET_SIZES),500,1000,2000,5000) --unrelated 5000

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

check-tests-can-fail: deps tools  ## a wrong caBundle, a webhook that is down, a broken patch: each fails the cluster tier
	bash scripts/check-tests-can-fail.sh
