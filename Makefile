# Relay: `make test` runs everything CI runs; `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHECKOV_VENV := .venv-checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov

.PHONY: help demo up venv lint typecheck test unit bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

demo: $(STAMP)  ## the whole event chain on this machine: sample triggers in, runs and records out
	$(BIN)/python -m devstack.demo

up: $(STAMP)  ## start the local stack and keep it running (Ctrl-C stops it)
	$(BIN)/python -m devstack.up

$(STAMP): requirements.txt functions/requirements.txt pipelines/requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# checkov pins packages of its own (boto3 among them) that clash with Relay's: it gets a venv of its own.
$(CHECKOV):
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet checkov==3.3.30
	touch $@

venv: $(STAMP)  ## create or update the virtual environment in .venv

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)  ## mypy (strict on the code)
	$(BIN)/mypy

test: lint typecheck $(CHECKOV)  ## lint, type-check and run the whole suite, integration tests included
	$(BIN)/python -m pytest

unit: $(STAMP)  ## only the tests that start no server
	$(BIN)/python -m pytest -m "not integration"

bench: $(STAMP)  ## launch overhead and a 1 GiB push, each against its baseline in the same run, as ratios
	$(BIN)/python -m bench.launch
	$(BIN)/python -m bench.push

clean:  ## remove the environment and caches
	rm -rf $(VENV) $(CHECKOV_VENV) .mypy_cache .ruff_cache .pytest_cache .relay
