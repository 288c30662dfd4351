"""Cost of the Prometheus metrics (metrics:) and the JSON log format per call, in the gateway process.

    .venv/bin/python bench/metrics_bench.py [--calls 100000] [--rounds 5]

CPU microseconds per call, median of `rounds`:

- `Metrics.metered` alone, for a served unary call (one attempt), a stream, and a failover (two
  attempts): what metrics add when metering already runs (a database or limits are configured);
  in one process and in prometheus_client's multiprocess mode (`serve --workers N`: memory-mapped
  values; measured in a child process with PROMETHEUS_MULTIPROC_DIR set);
- the whole accounting step with metrics on, wired as app.py wires a config that meters nothing else
  (a tracker whose observer feeds the metrics: observability/call_metrics.py) minus the same calls
  with nothing configured (no tracker at all): what `metrics: {enabled: true}` adds to such a gateway;
- one access-log line formatted as text and as JSON (formatting only; the write is the same).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import msgspec  # noqa: E402

from multihome.accounting.record import AttemptRecord  # noqa: E402
from multihome.accounting.tracker import Accounting  # noqa: E402
from multihome.config import Price  # noqa: E402
from multihome.metering.record import MeteredCall  # noqa: E402
from multihome.metering.service import Metering  # noqa: E402
from multihome.observability.call_metrics import attach  # noqa: E402
from multihome.schema.principal import Principal  # noqa: E402
from otel_bench import CONFIG as OTEL_CONFIG  # noqa: E402
from otel_bench import record_for  # noqa: E402

# otel_bench's two deployments, priced (so metering computes a cost, as with any priced deployment).
_PRICE = Price(input=2.5, output=10.0)
CONFIG = msgspec.structs.replace(
    OTEL_CONFIG,
    deployments={n: msgspec.structs.replace(d, price=_PRICE) for n, d in OTEL_CONFIG.deployments.items()},
)
PRINCIPAL = Principal(tenant="ten_1", subject="key_1", source="api_key", key_id="key_1")
BODY = b'{"model":"gpt-4o","messages":[{"role":"user","content":"Summarise the benefits of multi-cloud AI."}]}'
_UNARY = record_for(1, traced=False)
CASES = {
    "unary, 1 attempt": _UNARY,
    "stream, 1 attempt": msgspec.structs.replace(_UNARY, stream=True, first_byte_ms=3.2),
    "failover, 2 attempts": msgspec.structs.replace(
        _UNARY, deployment="b", attempts=(AttemptRecord("a", "http_503", 3.1), AttemptRecord("b", "ok", 12.5))
    ),
}


def _metrics():
    from multihome.observability.metrics import Metrics

    return Metrics(CONFIG.model_groups, CONFIG.deployments, static_tenants=[f"ten_{i}" for i in range(10)])


def per_call(fn, calls: int, rounds: int) -> float:
    """Median CPU µs per call of `fn()` over `rounds` rounds of `calls` calls."""
    results = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(calls):
            fn()
        results.append((time.process_time() - start) / calls * 1e6)
    return statistics.median(results)


def metered_rows(calls: int, rounds: int) -> list[tuple[str, float]]:
    metrics = _metrics()
    rows = []
    for name, call in CASES.items():
        m = MeteredCall(
            call=call,
            cost=Metering.from_config(CONFIG).prices.get(call.deployment).cost(call.usage),
            currency="USD",
            price_version="pv",
        )
        metrics.metered(m)  # bind the series once, as the first call of a label set does
        rows.append((name, per_call(lambda m=m: metrics.metered(m), calls, rounds)))
    # Every HTTP request, model call or not: the route as declared and the status.
    request = SimpleNamespace(route=SimpleNamespace(method="POST", path="/v1/chat/completions"), status=200)
    rows.append(("`Metrics.http_request`, any request", per_call(lambda: metrics.http_request(request), calls, rounds)))
    return rows


def accounting_cost(calls: int, rounds: int) -> tuple[float, float]:
    """(µs per call with nothing configured, µs per call with metrics on): begin + finish of a tracker."""
    served = SimpleNamespace(
        deployment=SimpleNamespace(
            name="a", provider="az", adapter=SimpleNamespace(kind="azure"), region="eastus", data_zone="US"
        ),
        attempts=(SimpleNamespace(deployment="a", outcome="ok", ms=12.5, reason=None),),
        stream=None,
        status=200,
    )
    usage = SimpleNamespace(prompt_tokens=16, completion_tokens=40, prompt_tokens_details=None)
    off = Accounting()
    on = Accounting()  # as app.py wires a config that meters nothing else
    attach(_metrics(), Metering.from_config(CONFIG), on)

    def one(acc: Accounting) -> None:
        tracker = acc.begin("req_1", "chat", PRINCIPAL, BODY)
        if tracker is not None:
            tracker.model_group = "gpt-4o"
            tracker.finish(200, "ok", served=served, usage=usage)

    return per_call(lambda: one(off), calls, rounds), per_call(lambda: one(on), calls, rounds)


def log_lines(calls: int, rounds: int) -> tuple[float, float]:
    from multihome.api import access_log
    from multihome.observability.json_log import JsonFormatter

    args = ("POST", "/v1/chat/completions", 200, 12.3, "req_0123456789abcdef", "key_abc", "default", "gpt-4o", "a")
    rec = logging.LogRecord("multihome.access", logging.INFO, __file__, 0, access_log._LINE, args, None)
    text, js = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"), JsonFormatter()
    return per_call(lambda: text.format(rec), calls, rounds), per_call(lambda: js.format(rec), calls, rounds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--multiprocess-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.multiprocess_child:
        for name, us in metered_rows(args.calls, args.rounds):
            print(f"{name}\t{us}")
        return
    single = metered_rows(args.calls, args.rounds)
    with tempfile.TemporaryDirectory(prefix="mh-metrics-bench-") as d:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--multiprocess-child",
                "--calls",
                str(args.calls),
                "--rounds",
                str(args.rounds),
            ],
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": d},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    multi = dict(line.split("\t") for line in out.splitlines())
    off, on = accounting_cost(args.calls, args.rounds)
    text, js = log_lines(args.calls, args.rounds)
    print("## Prometheus metrics and JSON logs (bench/metrics_bench.py)")
    print()
    print(f"CPU µs per call, median of {args.rounds} rounds of {args.calls:,} calls, in-process.")
    print()
    print("| per call | one process | `--workers N` (multiprocess files) | target | met |")
    print("|---|---|---|---|---|")
    for name, us in single:
        mp = float(multi[name])
        label = name if name.startswith("`") else f"`Metrics.metered`, {name}"
        print(f"| {label} | {us:.2f} µs | {mp:.2f} µs | ≤ 5 µs | {'yes' if max(us, mp) <= 5 else '**no**'} |")
    added = on - off
    print(
        f"| accounting with metrics on, minus nothing configured (tracker, metrics fed from it) "
        f"| {added:.2f} µs | | ≤ 5 µs | {'yes' if added <= 5 else '**no**'} |"
    )
    print(f"| access-log line formatted as text | {text:.2f} µs | | | |")
    print(f"| access-log line formatted as JSON | {js:.2f} µs | | | |")
    print(
        f"| JSON minus text, per log line | {js - text:.2f} µs | | ≤ 5 µs | {'yes' if js - text <= 5 else '**no**'} |"
    )


if __name__ == "__main__":
    main()
