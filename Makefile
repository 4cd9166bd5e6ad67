# One place for every check. CI (.ci/run) and the README call these targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: help setup demo test test-rust test-python fuzz-smoke lint lint-rust lint-python bench bench-quick clean

help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

setup: $(PY) ## venv + tribes (release build) + test and lint tools
	$(PIP) install -q "maturin>=1.5,<2"
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release -q -E test,lint
	bash .ci/install-java-interop.sh

demo: setup ## the main job
	$(VENV)/bin/tribes members --local --seconds 5

test: setup lint test-rust test-python fuzz-smoke ## everything CI runs

test-rust: ## cargo tests of the core (no Python needed)
	cargo test --locked -q

test-python: ## pytest, real processes and sockets on loopback
	$(PY) -m pytest -q -p no:cacheprovider tests

fuzz-smoke: ## every decoder under libFuzzer for a few seconds (cargo-fuzz on stable via RUSTC_BOOTSTRAP)
	FUZZ_SECONDS=$${FUZZ_SECONDS:-10} bash .ci/fuzz-smoke.sh

lint: lint-rust lint-python ## formatters, linters, type checks

lint-rust:
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings
	cargo clippy --locked --all-targets --features python -- -D warnings

lint-python:
	$(VENV)/bin/ruff check python tests benches
	$(VENV)/bin/ruff format --check python tests benches
	$(VENV)/bin/mypy python/tribes
	$(PY) -m mypy.stubtest tribes._core

bench: setup ## the channel benchmark (a few minutes)
	$(PY) benches/channel_throughput.py

bench-quick:
	$(PY) benches/channel_throughput.py --quick

clean:
	rm -rf target $(VENV) python/tribes/*.so
