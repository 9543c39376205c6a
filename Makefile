# memberwise — `make help` lists the targets. The README's two commands are `make run` and `make test`.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,spark]' -e clients/python
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install memberwise with its dev tools and the Spark engine

run: $(STAMP) ## Generate the demo platform (once), ingest it and serve the API on :8000
	$(BIN)/memberwise run

test: $(STAMP) ## Run the suite (SQLite; PostgreSQL too when MEMBERWISE_TEST_DATABASE_URL is set)
	@$(BIN)/pytest -q -n 2 --dist loadgroup; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(BIN)/ruff check src tests benchmarks clients
	$(BIN)/ruff format --check src tests benchmarks clients
	$(BIN)/mypy

format: $(STAMP) ## Format and auto-fix with ruff
	$(BIN)/ruff format src tests benchmarks clients
	$(BIN)/ruff check --fix src tests benchmarks clients

bench: $(STAMP) ## Run the benchmarks (slow; prints figures for docs/performance.md)
	$(BIN)/python benchmarks/ingest_bulk.py
	$(BIN)/python benchmarks/ingest_api.py
	$(BIN)/python benchmarks/demo_generate.py

clean: ## Remove the virtualenv and the embedded data (memberwise-data/)
	rm -rf $(VENV) memberwise-data

.PHONY: help install run test lint format bench clean
