PYTHON ?= python3.12
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run test lint bench clean system-deps-run system-deps-test

$(BIN)/omoi: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BIN)/omoi

install: $(BIN)/omoi

# git, tmux, Chromium, Redis, npm…: installed with apt-get when missing (see the script).
system-deps-run:
	bash deploy/system-deps.sh run

system-deps-test:
	bash deploy/system-deps.sh test

# Starts an embedded NATS server and the agents, submits the demo ticket and follows it.
run: system-deps-run install
	$(BIN)/omoi up --demo

# nats.js and its service client: the independent clients the compatibility tests drive Omoi with.
tests/js/node_modules/nats: tests/js/package-lock.json | system-deps-test
	npm ci --prefix tests/js --no-audit --no-fund

test: system-deps-test install tests/js/node_modules/nats
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: system-deps-test install
	$(BIN)/python -m benchmarks --readme README.md

clean:
	rm -rf $(VENV) .omoi .pytest_cache .mypy_cache .ruff_cache
