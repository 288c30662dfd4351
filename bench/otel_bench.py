"""Cost of the OpenTelemetry export (telemetry:) per call: one GenAI span, the two GenAI histograms,
the batch processor's encoding and OTLP/HTTP export, paced at 4,000 calls/s.

    .venv/bin/python bench/otel_bench.py [--seconds 4] [--rate 4000] [--rounds 3] [--gateway]

Runs like the gateway does (uvloop, the gateway's GC tuning), one task per call started every
millisecond. Reports CPU microseconds per call in the gateway process (`Telemetry.record`: msgpack
into a buffer, one pipe write per loop turn) minus the same loop without telemetry (the harness's
own task per call), and in the telemetry worker process (the OpenTelemetry SDK: span, histograms,
protobuf encoding, OTLP/HTTP POSTs). The OTLP receiver runs in a third process; its CPU is not
counted. Also: each part back to back, and what the disabled path costs.

--gateway adds whole-process runs: the real `multihome serve` (pinned to core 0, as in
gateway_bench.py) with telemetry off, on, and on at sample_ratio 0.1, under wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from metering_bench import harness_cost, paced
from multihome.accounting.record import AttemptRecord, CallRecord, Usage
from multihome.accounting.tracker import Accounting
from multihome.api.gateway import _tune_gc
from multihome.api.pipeline import Call, begin_call
from multihome.config import Telemetry as TelemetryConfig
from multihome.config import parse_config
from multihome.observability.genai import GenAIMapper
from multihome.observability.telemetry import Telemetry
from multihome.providers.registry import BY_NAME
from multihome.schema.principal import Principal

CONFIG = parse_config("""
server: {allow_unauthenticated: true}
providers:
  az: {kind: azure, endpoint: "https://contoso.openai.azure.com", region: eastus, data_zone: US}
  oa: {kind: openai, endpoint: "https://api.openai.com/v1"}
deployments:
  a: {provider: az, model: gpt-4o-prod}
  b: {provider: oa, model: gpt-4o}
model_groups:
  gpt-4o: {deployments: [a, b]}
""")
MAPPER = GenAIMapper.from_config(CONFIG, BY_NAME)
RECEIVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


def record_for(i: int, traced: bool) -> CallRecord:
    now = time.time()
    return CallRecord(
        request_id=f"req_{i:024x}",
        started_at=now - 0.4,
        finished_at=now,
        endpoint="chat",
        tenant=f"ten_{i % 10}",
        subject="s",
        principal_source="api_key",
        key_id=f"key_{i % 100}",
        model_group="gpt-4o",
        deployment="a",
        provider="az",
        provider_kind="azure",
        region="eastus",
        data_zone="US",
        status=200,
        outcome="ok",
        attempts=(AttemptRecord("a", "ok", 390.0),),
        usage=Usage(prompt_tokens=900, completion_tokens=120),
        latency_ms=400.0,
        traceparent=f"00-{i:032x}-00f067aa0ba902b7-01" if traced else None,
    )


async def paced_run(endpoint: str, seconds: float, rate: int, traced: bool, **cfg) -> tuple[float, float]:
    """(gateway-process CPU per call, worker-process CPU per call), the worker's including its flush."""
    sink = Telemetry(TelemetryConfig(otlp_endpoint=endpoint, **cfg), MAPPER, endpoint=endpoint)
    await sink.start()
    records = [record_for(i, traced) for i in range(1000)]

    async def one(i: int) -> None:
        await asyncio.sleep(0)
        sink.record(records[i % 1000])

    worker0 = _worker_cpu(sink._proc.pid)
    total, cpu, _ = await paced(one, seconds, rate)
    t = time.process_time()
    pid = sink._proc.pid
    before_exit = _worker_cpu(pid)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    await sink.close()  # the worker exports what is queued, then exits
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu += time.process_time() - t
    # The worker's CPU: up to just before exit from /proc, then what getrusage adds once it is reaped
    # (its whole life), minus what it had used before the paced run started.
    reaped = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    worker = max(reaped, before_exit) - worker0
    assert sink.dropped == 0, f"{sink.dropped} records dropped"
    return cpu / total, worker / total


def _worker_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pipeline_back_to_back(n: int = 20_000) -> float:
    """The worker's SDK work per call (span + 2 histograms), export not included."""
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from multihome.observability.otel_pipeline import Pipeline

    class Nop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    pipe = Pipeline(
        TelemetryConfig(otlp_endpoint="http://unused", max_queue=n, batch_delay_ms=600_000),
        MAPPER,
        span_exporter=Nop(),
        metric_reader=InMemoryMetricReader(),
    )
    records = [record_for(i, True) for i in range(1000)]
    t0 = time.perf_counter()
    for i in range(n):
        pipe.record(records[i % 1000])
    elapsed = time.perf_counter() - t0
    pipe.shutdown(5)
    return elapsed / n


def encode_back_to_back(n: int = 5_000) -> float:
    """The worker's OTLP protobuf encoding per span (the SDK's encoder, as its exporter runs it)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from multihome.observability.otel_pipeline import Pipeline

    mem = InMemorySpanExporter()
    pipe = Pipeline(
        TelemetryConfig(otlp_endpoint="http://unused", max_queue=n, batch_delay_ms=10, metrics=False),
        MAPPER,
        span_exporter=mem,
    )
    for i in range(n):
        pipe.record(record_for(i, True))
    pipe.shutdown(5)
    spans = mem.get_finished_spans()
    t0 = time.perf_counter()
    for i in range(0, len(spans), 512):
        encode_spans(spans[i : i + 512]).SerializePartialToString()
    return (time.perf_counter() - t0) / len(spans)


async def record_back_to_back(endpoint: str, n: int = 50_000) -> float:
    """Telemetry.record on the event loop (encode + buffer; the pipe write is once per loop turn)."""
    sink = Telemetry(TelemetryConfig(otlp_endpoint=endpoint, max_queue=n), MAPPER, endpoint=endpoint)
    await sink.start()
    records = [record_for(i, True) for i in range(1000)]
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for i in range(1000):
            sink.record(records[i])
        best = min(best, (time.perf_counter() - t0) / 1000)
        await asyncio.sleep(0.05)  # let the write happen and the worker drain
    await sink.close()
    return best


def disabled_path(n: int = 50_000) -> tuple[float, float]:
    """begin_call + finish with one no-op sink: trace context off (telemetry absent) and on."""

    class Nop:
        def record(self, call) -> None:
            pass

    class G:
        name = "gpt-4o"

    call = Call(
        {
            "headers": [
                (b"content-type", b"application/json"),
                (b"authorization", b"Bearer x"),
                (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ]
        },
        b"req",
    )
    call.principal = Principal(tenant="t", subject="s", source="api_key")
    out = []
    for wanted in (False, True):
        acc = Accounting(sinks=[Nop()])
        acc.trace_context = wanted
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for i in range(n):
                begin_call(call, acc, "chat", b"{}", G, None).finish(200, "ok")
            best = min(best, (time.perf_counter() - t0) / n)
        out.append(best)
    return out[0], out[1]


def gateway_runs(endpoint: str, receiver_pid: int, seconds: int) -> None:
    import tempfile

    import gateway_bench as gb

    print()
    print("Whole gateway (`multihome serve`, one worker pinned to core 0; simulator, wrk, OTLP receiver and the")
    print("telemetry worker process on core 1):")
    print()
    print("| telemetry | p50 c=1 | p99 c=1 | throughput c=64 | errors |")
    print("|---|---|---|---|---|")
    sim, sim_url = gb.start_sim()
    try:
        for label, extra in (
            ("off", ""),
            ("on, sample_ratio 1.0", f"telemetry: {{otlp_endpoint: '{endpoint}'}}\n"),
            ("on, sample_ratio 0.1", f"telemetry: {{otlp_endpoint: '{endpoint}', sample_ratio: 0.1}}\n"),
        ):
            with tempfile.TemporaryDirectory() as tmp:
                port = _free_port()
                config = Path(tmp) / "bench.yaml"
                config.write_text(gb.CONFIG.format(sim=sim_url) + extra)
                proc = subprocess.Popen(
                    [str(gb.BIN / "multihome"), "serve", "--config", str(config), "--port", str(port)], env=gb.ENV
                )
                try:
                    url = f"http://127.0.0.1:{port}"
                    _wait_ready(url)
                    core = gb.set_layout(proc.pid, sim.pid, pinned=True)
                    if core is not None:  # the receiver and the telemetry worker leave core 0 to the gateway
                        for pid in [receiver_pid, *_children(proc.pid)]:
                            os.sched_setaffinity(pid, {core})
                    gb.wrk(url, "bench", gb.KEY, connections=1, seconds=1, tmp=Path(tmp), core=core)  # warm-up
                    lat = gb.wrk(url, "bench", gb.KEY, connections=1, seconds=seconds, tmp=Path(tmp), core=core)
                    thr = gb.wrk(url, "bench", gb.KEY, connections=64, seconds=seconds, tmp=Path(tmp), core=core)
                    print(
                        f"| {label} | {lat['p50_ms']:.3f} ms | {lat['p99_ms']:.3f} ms | {thr['rps']:,.0f} req/s | "
                        f"{lat['errors'] + thr['errors']} |"
                    )
                finally:
                    proc.terminate()
                    proc.wait(30)
                    os.sched_setaffinity(0, gb.ALL_CORES)
    finally:
        sim.terminate()
        sim.wait()


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str) -> None:
    import urllib.request

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(url + "/readyz", timeout=1).status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("gateway did not start")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--rate", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gateway", action="store_true", help="also run the real gateway under wrk")
    args = ap.parse_args()
    _tune_gc()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    endpoint = f"http://127.0.0.1:{receiver.stdout.readline().strip()}"
    try:
        print("## OpenTelemetry export (bench/otel_bench.py)")
        print()
        print("CPU per call in the gateway process (Telemetry.record: msgpack + one pipe write per loop turn) minus")
        print("the pacing loop's own cost, and in the telemetry worker process (the OpenTelemetry SDK: span,")
        print("histograms, protobuf encoding, OTLP/HTTP POSTs to a receiver in a third process).")
        print()
        off, on = disabled_path()
        print(
            f"Disabled path: begin_call + finish with one no-op sink {off * 1e6:.2f} µs; with the trace context kept "
            f"{on * 1e6:.2f} µs (telemetry absent: no sink, no OpenTelemetry import, trace context not read)."
        )
        print(
            f"Back to back: `Telemetry.record` on the event loop {await record_back_to_back(endpoint) * 1e6:.1f} µs; "
            f"in the worker, the SDK's span + 2 histograms {pipeline_back_to_back() * 1e6:.1f} µs and its OTLP "
            f"protobuf encoding {encode_back_to_back() * 1e6:.1f} µs per call."
        )
        print()
        print(
            "| mode | calls/s | calls | gateway process CPU per call, median (range) | worker process CPU per call | harness |"
        )
        print("|---|---|---|---|---|---|")
        modes = [
            ("spans + metrics, client traceparent", True, {}),
            ("spans + metrics, new trace", False, {}),
            ("spans only (metrics: false)", True, {"metrics": False}),
            ("metrics + 10 % of spans (sample_ratio: 0.1)", False, {"sample_ratio": 0.1}),
        ]
        for label, traced, cfg in modes:
            net, harness, worker = [], [], []
            for _ in range(args.rounds):
                base = await harness_cost(min(args.seconds, 2), args.rate)
                cost, in_worker = await paced_run(endpoint, args.seconds, args.rate, traced, **cfg)
                harness.append(base)
                net.append(cost - base)
                worker.append(in_worker)
            print(
                f"| {label} | {args.rate:,} | {args.rounds} × {int(args.seconds * args.rate):,} | "
                f"**{statistics.median(net) * 1e6:.1f} µs** ({min(net) * 1e6:.1f}–{max(net) * 1e6:.1f}) | "
                f"{statistics.median(worker) * 1e6:.1f} µs | {statistics.median(harness) * 1e6:.1f} µs |"
            )
        if args.gateway:
            gateway_runs(endpoint, receiver.pid, max(2, int(args.seconds)))
    finally:
        receiver.terminate()
        receiver.wait()


if __name__ == "__main__":
    uvloop.run(main())
