# lxd-gateway: `make run` serves the API, `make test` runs every test. Both set up what is missing.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCAL_LXD ?= .lxd

.PHONY: run test test-quick fuzz lint openapi bench clean venv

venv: $(STAMP)

# What serving needs (`make run`); the tests' tools (the `dev` extra) come with DEV_STAMP.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip uninstall -y -q swagger-ui-bundle 2>/dev/null || true  # replaced by swagger-ui-bundle-v2
	$(BIN)/pip install -q -e .
	@touch $(STAMP)

DEV_STAMP := $(VENV)/.installed-dev
$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(DEV_STAMP)

# The client distribution (client/), for its tests; `make run` does not need it.
$(VENV)/.installed-client: $(DEV_STAMP) client/pyproject.toml
	$(BIN)/pip install -q -e ./client
	@touch $@

## Serve the gateway on LXDGW_BIND (127.0.0.1:8080); starts a local LXD under .lxd/ when none is found.
run: $(STAMP)
	@if [ -z "$$LXDGW_REMOTES" ]; then \
	  sock=$$($(BIN)/python -m app.locallxd ensure-local --dir $(LOCAL_LXD)) || exit 1; \
	  echo "lxd-gateway: using the $$($(BIN)/python -m app.locallxd backend-of $$sock) socket $$sock"; \
	  export LXD_SOCKET=$$sock; \
	fi; exec $(BIN)/python -m app serve

## Every test: the quick ones and the `lxd` ones (real private LXD daemons, gateway processes).
test: $(DEV_STAMP) $(VENV)/.installed-client
	$(BIN)/ruff check app tests bench client
	$(BIN)/lint-imports
	$(BIN)/mypy --strict --config-file client/pyproject.toml client/src/lxdgw_client
	$(BIN)/python -m pytest -p no:cacheprovider -q -ra tests
	$(BIN)/python -m app.locallxd check-clean

## The tests that need no LXD (not marked `lxd`), for quick iteration.
test-quick: $(DEV_STAMP) $(VENV)/.installed-client
	$(BIN)/python -m pytest -p no:cacheprovider -q -m "not lxd and not slow" tests

## Fuzz the API with new draws: 10,000 schemathesis requests (per operation, then stateful scenarios) against a
## gateway on a private LXD; FUZZ_REQUESTS=n for another count.
FUZZ_REQUESTS ?= 10000
fuzz: $(DEV_STAMP)
	FUZZ_EXPLORE=1 FUZZ_REQUESTS=$(FUZZ_REQUESTS) FUZZ_PER_OPERATION=25 \
	  $(BIN)/python -m pytest -p no:cacheprovider -q -rA -s tests/http/test_fuzz_live.py
	$(BIN)/python -m app.locallxd check-clean

lint: $(DEV_STAMP)
	$(BIN)/ruff check app tests bench client
	$(BIN)/lint-imports

## Rewrite the committed OpenAPI document from the app.
openapi: $(DEV_STAMP)
	$(BIN)/python -m app.openapi_dump > openapi/openapi.json
	$(BIN)/python -m app.openapi_dump --asyncapi > openapi/asyncapi.json

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(DEV_STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

## Every benchmark in bench/, one table (pylxd is installed for the comparison).
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

clean:
	-$(BIN)/python -m app.locallxd stop-local --dir $(LOCAL_LXD)
	rm -rf $(VENV) $(LOCAL_LXD) .pytest_cache .ruff_cache
