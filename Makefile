# Two entry points a newcomer needs: `make demo` and `make test`. Both bootstrap .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps demo lint test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/multihome demo

system-deps:
	bash scripts/install-system-deps.sh

# Lint, format, types and the one-way import contract (pyproject.toml); `make test` runs it first.
lint: install
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install system-deps
	$(BIN)/python -m pytest

bench: install
	bash bench/run.sh

# Every chat scenario against every provider's simulator; rewrites docs/conformance.md.
.PHONY: conformance
conformance: install
	$(BIN)/python -m tests.conformance.report

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
