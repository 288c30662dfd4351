#!/usr/bin/env bash
# `make bench`: install the load generator if missing, then run the gateway benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk; else sudo apt-get install -y wrk; fi
fi
.venv/bin/python bench/gateway_bench.py "$@"
