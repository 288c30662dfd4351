#!/usr/bin/env bash
# `make bench`: install the load generator if missing, run every benchmark, write bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk; else sudo apt-get install -y wrk; fi
fi
mkdir -p bench/out
PY=.venv/bin/python
$PY bench/gateway_bench.py --out bench/out/gateway.md "$@"
$PY bench/governance_bench.py --out bench/out/governance.md
$PY bench/governance_workers.py --out bench/out/governance_workers.md
{
  cat bench/out/gateway.md
  echo
  echo "## Governance, end to end (the figure of record for issue 17)"
  echo
  cat bench/out/governance.md
  echo
  echo "### \`serve --workers N\`, every layer on (PostgreSQL + Redis)"
  echo
  cat bench/out/governance_workers.md
  echo
  echo "## Hot-path components (in-process, median of 5 rounds)"
  echo
  echo "| component | per request | target | met |"
  echo "|---|---|---|---|"
  $PY bench/planner_bench.py | sed 's/^| \([a-z-]*\) |/| planning, 10 deployments, strategy \1 |/; s/ | yes |$/ | ≤ 50 µs | yes |/; s/ | \*\*no\*\* |$/ | ≤ 50 µs | **no** |/'
  $PY bench/identity_policy_bench.py
  echo
  $PY bench/translation_bench.py
  echo
  echo '```'
  $PY bench/policy_bench.py
  echo '```'
  echo
  $PY bench/pins_bench.py
  echo
  $PY bench/metering_bench.py
  echo
  echo '```'
  $PY bench/usage_writer_bench.py
  echo '```'
  echo
  echo '```'
  $PY bench/audit_bench.py
  echo '```'
  echo
  echo '```'
  $PY bench/otel_bench.py
  echo '```'
  echo
  $PY bench/metrics_bench.py
  echo
  $PY bench/responses_bench.py
  echo
  $PY bench/responses_rebuild_bench.py
  echo
  echo "## Agent memory: search at 100,000 records, recall@5 (bench/memory_bench.py)"
  echo
  $PY bench/memory_bench.py
  echo
  echo "## Agent runs: orchestration per step (bench/agent_step_bench.py)"
  echo
  $PY bench/agent_step_bench.py
} > bench/RESULTS.md
cat bench/RESULTS.md
