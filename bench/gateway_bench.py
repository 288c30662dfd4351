"""Gateway overhead, measured as the difference against a direct call to the same simulator.

One run: a simulator (core 1), one gateway worker (core 0), wrk and an asyncio client (core 1).
Writes bench/RESULTS.md. Every load loop is bounded in count and time; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KEY = "bench-client-key"
SIM_KEY = "bench-sim-key"
CHAT = {
    "model": "MODEL",
    "messages": [{"role": "user", "content": "Summarise the benefits of multi-cloud AI in one line."}],
}

CONFIG = """
server: {{api_keys_env: [BENCH_CLIENT_KEY]}}
providers:
  sim: {{kind: openai, endpoint: "{sim}/v1", auth: {{api_key_env: BENCH_SIM_KEY}}, max_connections: 4096}}
deployments:
  bench@sim: {{provider: sim, model: bench-model}}
  stream@sim: {{provider: sim, model: bench-stream}}
model_groups:
  bench: {{deployments: [bench@sim]}}
  bench-stream: {{deployments: [stream@sim], timeouts: {{total_s: 120}}}}
"""

ENV = {**os.environ, "BENCH_CLIENT_KEY": KEY, "BENCH_SIM_KEY": SIM_KEY}


ALL_CORES = set(range(os.cpu_count() or 1))


def _pin(core: int | None) -> list[str]:
    if core is None or not shutil.which("taskset") or len(ALL_CORES) < 2:
        return []
    return ["taskset", "-c", str(core)]


def pin_process(pid: int, cores: set[int]) -> None:
    """Every thread of `pid` on `cores`. sched_setaffinity(pid) moves only the thread whose id is `pid`:
    threads the process started before (the upstream client's runtime, the writer threads) kept every core."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cores)
        except (ProcessLookupError, PermissionError):  # a thread that ended meanwhile
            pass


def set_layout(gateway_pid: int, sim_pid: int, pinned: bool) -> int | None:
    """Pinned: the gateway (all its threads) owns core 0; simulator and load generators share core 1.
    Returns wrk's core."""
    if len(ALL_CORES) < 2:
        return None
    pin_process(gateway_pid, {0} if pinned else ALL_CORES)
    pin_process(sim_pid, {1} if pinned else ALL_CORES)
    os.sched_setaffinity(0, {1} if pinned else ALL_CORES)
    return 1 if pinned else None


def start_sim() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "multihome.simulators",
            "--kind",
            "openai",
            "--name",
            "bench",
            "--port",
            "0",
            "--api-key-env",
            "BENCH_SIM_KEY",
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("READY "), line
    return proc, line.split()[1].rstrip("/")


def start_gateway(
    sim_url: str,
    port: int,
    tmp: Path,
    log_level: str | None = None,
    extra_config: str = "",
    config_text: str | None = None,
) -> subprocess.Popen:
    """`multihome serve` at its default log level unless told; what it logs (at info, an access line
    per call) goes to a file, as it would under a service manager, not to the terminal. `config_text`:
    another bench's config (default: this one's, on the simulator at `sim_url`)."""
    config = tmp / "bench.yaml"
    config.write_text((config_text if config_text is not None else CONFIG.format(sim=sim_url)) + extra_config)
    with open(tmp / "gateway.log", "w") as log:
        proc = subprocess.Popen(
            [
                str(BIN / "multihome"),
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
                *(["--log-level", log_level] if log_level else []),
            ],
            env=ENV,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            import urllib.request

            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200:
                return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("gateway did not start")


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU seconds so far, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_call(url: str, pid: int, sim_pid: int, *, seconds: int, tmp: Path) -> tuple[float, dict]:
    """The server's CPU µs per call under wrk at c=64 (server alone on a core, simulator and wrk on the
    other), after a 2 s warm-up at c=8; and wrk's result."""
    core = set_layout(pid, sim_pid, pinned=True)
    wrk(url, "bench", KEY, connections=8, seconds=2, tmp=tmp, core=core)  # warm-up
    cpu0 = cpu_seconds(pid)
    r = wrk(url, "bench", KEY, connections=64, seconds=seconds, tmp=tmp, core=core)
    return (cpu_seconds(pid) - cpu0) / max(r["requests"], 1) * 1e6, r


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * _UNIT[unit]


def wrk(url: str, model: str, key: str, *, connections: int, seconds: int, tmp: Path, core: int | None = None) -> dict:
    body = tmp / f"body-{model}.json"
    body.write_text(json.dumps({**CHAT, "model": model}))
    out = subprocess.run(
        [
            *_pin(core),
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(ROOT / "bench/post.lua"),
            url + "/v1/chat/completions",
        ],
        env={**ENV, "WRK_BODY": str(body), "WRK_KEY": key},
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M))  # "1.99s " ends in a space
    if "50" not in pct or "99" not in pct:  # wrk wrote no latency distribution (no call completed, or a stall)
        print(f"wrk at c={connections} on {url}: no latency distribution in its output:\n{out}", file=sys.stderr)
        pct = {"50": "0us", "99": "0us", **pct}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "p50_ms": _ms(pct["50"]),
        "p99_ms": _ms(pct["99"]),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "errors": (int(non2xx.group(1)) if non2xx else 0)
        + (sum(map(int, socket_errors.groups())) if socket_errors else 0),
    }


async def ttfc(url: str, model: str, key: str, n: int) -> list[float]:
    """Time to the first SSE data chunk, sequentially, n streams."""
    body = {**CHAT, "model": model, "stream": True}
    headers = {"authorization": f"Bearer {key}"}
    out = []
    async with aiohttp.ClientSession() as http:
        for _ in range(n):
            t0 = time.perf_counter()
            async with http.post(url + "/v1/chat/completions", json=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                first = await resp.content.readany()
                out.append((time.perf_counter() - t0) * 1000)
                assert first.startswith(b"data:")
                await resp.read()
    return out


async def open_streams(url: str, key: str, sim_url: str, gateway_pid: int, n: int) -> dict:
    """Hold n streams open through the gateway at once; report the gateway's RSS while they are."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        # Each stream lasts ~30 s upstream (600 chunks, 50 ms apart) so all n overlap.
        await http.post(sim_url + "/_sim/faults", json={"chunks": 600, "chunk_delay_ms": 50, "match": "bench-stream"})
        body = {**CHAT, "model": "bench-stream", "stream": True}
        started = asyncio.Event()
        opened = 0

        async def one():
            nonlocal opened
            async with http.post(
                url + "/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {key}"},
                timeout=aiohttp.ClientTimeout(total=90),
            ) as resp:
                assert resp.status == 200
                await resp.content.readany()
                opened += 1
                if opened == n:
                    started.set()
                await asyncio.sleep(3600)  # hold it open until cancelled

        tasks = [asyncio.create_task(one()) for _ in range(n)]
        try:
            await asyncio.wait_for(started.wait(), 60)
            await asyncio.sleep(2)
            status = Path(f"/proc/{gateway_pid}/status").read_text()
            rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
            hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024
            async with http.get(sim_url + "/_sim/stats") as resp:
                sim_open = (await resp.json())["open_streams"]
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await http.delete(sim_url + "/_sim/faults")
    return {"streams": opened, "sim_open_streams": sim_open, "rss_mb": rss, "peak_rss_mb": hwm}


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def machine() -> str:
    cpu = next(
        (
            l.split(":", 1)[1].strip()
            for l in Path("/proc/cpuinfo").read_text().splitlines()
            if l.startswith("model name")
        ),
        "?",
    )
    mem = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) // (1024 * 1024)
    import aiohttp as a
    import msgspec as m
    import uvicorn as u

    return (
        f"{cpu}, {os.cpu_count()} cores, {mem} GiB; Linux {platform.release()}; Python {platform.python_version()}; "
        f"uvicorn {u.__version__}, aiohttp {a.__version__}, msgspec {m.__version__}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--ttfc-n", type=int, default=500)
    ap.add_argument("--latency-runs", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench/RESULTS.md"))
    ap.add_argument("--log-level", help="the gateway's --log-level (default: serve's own, info: access log on)")
    ap.add_argument("--metrics", action="store_true", help="serve with metrics: {enabled: true} (docs/metrics.md)")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    tmp = Path(tempfile.mkdtemp(prefix="mh-bench-"))
    sim, sim_url = start_sim()
    port = 4890
    gw = start_gateway(sim_url, port, tmp, args.log_level, "metrics: {enabled: true}\n" if args.metrics else "")
    gw_url = f"http://127.0.0.1:{port}"
    try:
        # Latency (concurrency 1): the OS schedules all processes, as on any host.
        set_layout(gw.pid, sim.pid, pinned=False)
        wrk(gw_url, "bench", KEY, connections=8, seconds=2, tmp=tmp)  # warm-up
        wrk(sim_url, "bench-model", SIM_KEY, connections=8, seconds=2, tmp=tmp)
        c1_runs = []
        for _ in range(args.latency_runs):
            c1_runs.append(
                (
                    wrk(sim_url, "bench-model", SIM_KEY, connections=1, seconds=args.seconds, tmp=tmp),
                    wrk(gw_url, "bench", KEY, connections=1, seconds=args.seconds, tmp=tmp),
                )
            )
        c1_runs.sort(key=lambda run: run[1]["p99_ms"] - run[0]["p99_ms"])
        c1_direct, c1_gw = c1_runs[len(c1_runs) // 2]  # the median run by added p99
        t_direct = asyncio.run(ttfc(sim_url, "bench-stream", SIM_KEY, args.ttfc_n))
        t_gw = asyncio.run(ttfc(gw_url, "bench-stream", KEY, args.ttfc_n))
        # Throughput and memory: one gateway worker owns one core.
        core = set_layout(gw.pid, sim.pid, pinned=True)
        c64_direct = wrk(sim_url, "bench-model", SIM_KEY, connections=64, seconds=args.seconds, tmp=tmp, core=core)
        c64_gw = wrk(gw_url, "bench", KEY, connections=64, seconds=args.seconds, tmp=tmp, core=core)
        held = asyncio.run(open_streams(gw_url, KEY, sim_url, gw.pid, args.streams))
    finally:
        gw.terminate()
        sim.terminate()
        gw.wait(10)
        sim.wait(10)

    rows = [
        (
            "added latency p50, concurrency 1",
            f"{c1_direct['p50_ms']:.3f} ms",
            f"{c1_gw['p50_ms']:.3f} ms",
            f"{c1_gw['p50_ms'] - c1_direct['p50_ms']:.3f} ms",
            "≤ 0.5 ms",
            c1_gw["p50_ms"] - c1_direct["p50_ms"] <= 0.5,
        ),
        (
            "added latency p99, concurrency 1",
            f"{c1_direct['p99_ms']:.3f} ms",
            f"{c1_gw['p99_ms']:.3f} ms",
            f"{c1_gw['p99_ms'] - c1_direct['p99_ms']:.3f} ms",
            "≤ 2 ms",
            c1_gw["p99_ms"] - c1_direct["p99_ms"] <= 2,
        ),
        (
            "throughput, concurrency 64 (non-streaming)",
            f"{c64_direct['rps']:.0f} req/s",
            f"{c64_gw['rps']:.0f} req/s",
            f"{c64_gw['errors']} errors",
            "≥ 4,000 req/s, 0 errors",
            c64_gw["rps"] >= 4000 and c64_gw["errors"] == 0,
        ),
        (
            "added time-to-first-chunk p50 (streams)",
            f"{pct(t_direct, 50):.3f} ms",
            f"{pct(t_gw, 50):.3f} ms",
            f"{pct(t_gw, 50) - pct(t_direct, 50):.3f} ms",
            "≤ 1 ms",
            pct(t_gw, 50) - pct(t_direct, 50) <= 1,
        ),
        (
            f"gateway RSS with {held['streams']} concurrent open streams",
            "",
            f"{held['rss_mb']:.0f} MB (peak {held['peak_rss_mb']:.0f} MB)",
            f"simulator saw {held['sim_open_streams']} open",
            "≤ 150 MB",
            held["peak_rss_mb"] <= 150 and held["streams"] == args.streams,
        ),
    ]
    lines = [
        "# Benchmark results",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `make bench` "
        f"({args.seconds} s per wrk run, {args.ttfc_n} sequential streams for time-to-first-chunk).",
        "",
        f"Machine: {machine()}.",
        "",
        "Layout: latency and time-to-first-chunk with every process free to run on either core (the OS "
        f"schedules them); the latency row is the median of {args.latency_runs} runs by added p99. Throughput and "
        "memory with the gateway's one worker pinned to core 0 and the simulator and load generators on core 1. "
        '"Direct" is the same request sent straight to the simulator in the same run; "added" is the difference.',
        "",
        "All latency runs (direct p50/p99 → through Multihome p50/p99): "
        + "; ".join(f"{d['p50_ms']:.3f}/{d['p99_ms']:.3f} → {g['p50_ms']:.3f}/{g['p99_ms']:.3f} ms" for d, g in c1_runs)
        + ".",
        "",
        "| measure | direct | through Multihome | added / note | target | met |",
        "|---|---|---|---|---|---|",
        *[f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {'yes' if r[5] else '**no**'} |" for r in rows],
        "",
        f"Simulator alone at concurrency 64: {c64_direct['rps']:.0f} req/s; gateway at concurrency 64: "
        f"p50 {c64_gw['p50_ms']:.2f} ms, p99 {c64_gw['p99_ms']:.2f} ms, {c64_gw['requests']} requests, {c64_gw['errors']} errors.",
        f"Time-to-first-chunk p99: direct {pct(t_direct, 99):.3f} ms, through Multihome {pct(t_gw, 99):.3f} ms.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
