"""The governed request path end to end: the real `multihome serve` process with each governance
layer off, alone and all on, against one simulator, next to a bare pass-through, in one run.

    .venv/bin/python bench/governance_bench.py [--seconds 8] [--only plain,all-sqlite] [--out FILE]

Configurations (one gateway worker each, the same simulator answering in ~0.1 ms):
  bare         Starlette + aiohttp + msgspec, uvloop + httptools (bench/bare_passthrough.py)
  plain        keys from the environment, nothing else
  +storage     `storage:` a SQLite file (the key still from the environment)
  +metering    storage + one key budget and one key rate limit (usage rows in SQLite)
  +audit       the audit trail with a signing key, no storage
  all-sqlite   storage + metering + audit on SQLite
  all-pg       storage + metering + audit on PostgreSQL, counters in Redis (real servers, as the
               tests start them)
  all-sqlite (audit sync: answer)
               all-sqlite with each answer waiting for its `call_started` fsync (docs/audit.md):
               what the stricter audit promise costs over the default `sync: interval`
  +metering (no usage spool)
               +metering with `metering.spool.enabled: false`: what the usage spool costs

For each: req/s at concurrency 64 (wrk, gateway (every thread) pinned to core 0, simulator, wrk, PostgreSQL and Redis on core 1),
p50/p99 at concurrency 1, stream time-to-first-chunk p50, and the gateway's CPU per call over the
c=64 run (utime + stime of the process, all its threads, from /proc). Every load loop is bounded
in time and count; loopback only. This bench, not the component benches, is the figure of record
for governance (issue 17).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from gateway_bench import ALL_CORES, ENV, KEY, machine, pct, pin_process, set_layout, start_sim, ttfc, wrk  # noqa: E402

BIN = Path(sys.executable).parent
CLK = os.sysconf("SC_CLK_TCK")

BASE = """
server: {{api_keys_env: [BENCH_CLIENT_KEY]}}
providers:
  sim: {{kind: openai, endpoint: "{sim}/v1", auth: {{api_key_env: BENCH_SIM_KEY}}, max_connections: 4096}}
deployments:
  bench@sim: {{provider: sim, model: bench-model, price: {{input: 1, output: 2}}}}
  stream@sim: {{provider: sim, model: bench-stream}}
model_groups:
  bench: {{deployments: [bench@sim]}}
  bench-stream: {{deployments: [stream@sim], timeouts: {{total_s: 120}}}}
"""
METERING = """
metering:
  budgets: [{scope: key, id: "*", amount: 1000000, period: day, mode: hard}]
  rate_limits: [{scope: key, id: "*", requests_per_minute: 100000000, tokens_per_minute: 10000000000}]
"""
REDIS = "  redis_url_env: BENCH_REDIS_URL\n"
NOSPOOL = "  spool: {enabled: false}\n"
STORAGE = "storage: {{url: {url}}}\n"
AUDIT = "audit: {{dir: {dir}, signing_key_file: {key}{extra}}}\n"

BASE_SUFFIX = " (base)"
LAYERS = {
    "plain": (),
    "+storage": ("storage",),
    "+metering": ("storage", "metering"),
    "+audit": ("audit",),
    "all-sqlite": ("storage", "metering", "audit"),
    "all-pg": ("pg", "metering", "audit"),
    # The stricter audit promise (each answer waits for its call_started's fsync), measured against the default.
    "all-sqlite (audit sync: answer)": ("storage", "metering", "audit", "sync-answer"),
    # What the usage spool (a row on local disk before each answer: docs/metering.md) costs.
    "+metering (no usage spool)": ("storage", "metering", "nospool"),
}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime, stime (all threads)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_ready(url: str, proc: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status in (200, 404, 405):
                    return
        except urllib.error.HTTPError as e:
            if e.code in (404, 405):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def workspace(prefix: str, keep: bool = False) -> Path:
    """A temporary directory holding an audit signing key (audit.pem) for the configurations, removed
    when the script exits unless `keep` (a run's databases, audit chains and spool files take GBs)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    if not keep:
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    subprocess.run(
        [str(BIN / "multihome"), "audit", "keygen", "--out", str(tmp / "audit.pem")],
        check=True,
        capture_output=True,
        env=ENV,
    )
    return tmp


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.strip("+").replace(BASE_SUFFIX, "-base")).strip("-")


def config_for(name: str, sim_url: str, tmp: Path, pg_url: str | None) -> str:
    layers = LAYERS[name.removesuffix(BASE_SUFFIX)]
    text = BASE.format(sim=sim_url)
    if "storage" in layers:
        text += STORAGE.format(url=f"sqlite+aiosqlite:///{tmp / slug(name)}.db")
    if "pg" in layers:
        text += STORAGE.format(url=pg_url)
    if "metering" in layers:
        text += METERING + (REDIS if "pg" in layers else "") + (NOSPOOL if "nospool" in layers else "")
    if "audit" in layers:
        extra = ", sync: answer" if "sync-answer" in layers else ""
        text += AUDIT.format(dir=tmp / f"audit-{slug(name)}", key=tmp / "audit.pem", extra=extra)
    return text


def start_gateway(name: str, text: str, port: int, tmp: Path, env: dict, *extra: str) -> subprocess.Popen:
    path = tmp / f"{slug(name)}.yaml"
    path.write_text(text)
    with open(tmp / f"{slug(name)}.log", "w") as log:
        proc = subprocess.Popen(
            [str(BIN / "multihome"), "serve", "--config", str(path), "--port", str(port), *extra],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
    return proc


def start_bare(sim_url: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "bare_passthrough.py"), "--port", str(port), "--upstream", sim_url + "/v1"]
        + ["--model", "bench=bench-model", "--model", "bench-stream=bench-stream"],
        env=ENV,
    )
    wait_ready(f"http://127.0.0.1:{port}/", proc)
    return proc


def latency(name: str, proc: subprocess.Popen, url: str, sim_pid: int, tmp: Path, args) -> dict:
    """Warm-up, then concurrency 1 and stream TTFT, every process free to run on either core."""
    set_layout(proc.pid, sim_pid, pinned=False)
    wrk(url, "bench", KEY, connections=8, seconds=2, tmp=tmp)
    c1 = wrk(url, "bench", KEY, connections=1, seconds=args.seconds, tmp=tmp)
    t = asyncio.run(ttfc(url, "bench-stream", KEY, args.ttfc_n))
    return {"name": name, "errors": c1["errors"], "p50": c1["p50_ms"], "p99": c1["p99_ms"], "ttfc": pct(t, 50)}


def c1_rounds(names: list[str], procs: dict, urls: dict, sim_pid: int, tmp: Path, args) -> None:
    """--c1-only: each configuration warmed, then `rounds` interleaved c=1 runs; prints p50/p99 of each."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for name in names:
        set_layout(procs[name].pid, sim_pid, pinned=False)
        wrk(urls[name], "bench", KEY, connections=8, seconds=2, tmp=tmp)
    for _ in range(args.rounds):
        for name in names:
            c1 = wrk(urls[name], "bench", KEY, connections=1, seconds=args.seconds, tmp=tmp)
            runs[name].append((c1["p50_ms"], c1["p99_ms"]))
            print(
                f"{name}: p50 {c1['p50_ms']:.3f} p99 {c1['p99_ms']:.3f} ms, load {os.getloadavg()[0]:.1f}", flush=True
            )
    for name in names:
        p50 = statistics.median(r[0] for r in runs[name])
        p99 = statistics.median(r[1] for r in runs[name])
        each = " ".join(f"{r[1]:.2f}" for r in runs[name])
        print(f"| {name} | {p50:.3f} | {p99:.3f} | {each} |")


def throughput(proc: subprocess.Popen, url: str, sim_pid: int, tmp: Path, args, services: list) -> dict:
    """Concurrency 64 with the gateway alone on core 0, and its CPU (all threads) per call. PostgreSQL and
    Redis join the simulator and wrk on core 1: left free they ran on the gateway's core too, and its CPU per
    call rose with their cache and scheduling noise (bench/RESULTS.md, the pgcost pass)."""
    core = set_layout(proc.pid, sim_pid, pinned=True)
    pinned = service_pids(services) if core is not None else []
    for pid in pinned:
        _affinity(pid, {core})
    cpu0 = cpu_seconds(proc.pid)
    c64 = wrk(url, "bench", KEY, connections=64, seconds=args.seconds, tmp=tmp, core=core)
    cpu = cpu_seconds(proc.pid) - cpu0
    set_layout(proc.pid, sim_pid, pinned=False)
    for pid in pinned:
        _affinity(pid, ALL_CORES)
    return {**c64, "cpu_us": cpu / max(c64["requests"], 1) * 1e6}


def _affinity(pid: int, cores) -> None:
    try:
        pin_process(pid, cores)
    except FileNotFoundError:  # a PostgreSQL backend that ended meanwhile
        pass


def service_pids(services: list) -> list[int]:
    """The pids of the PostgreSQL servers (postmaster and every child: the gateway's backends are forked
    already) and Redis servers the run started."""
    pids = []
    for service in services:
        popen = getattr(service, "popen", None)
        if popen is not None:  # Redis
            pids.append(popen.pid)
            continue
        postmaster = int((service.data / "postmaster.pid").read_text().split()[0])
        pids.append(postmaster)
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    pids.append(int(stat.parent.name))
            except (OSError, ValueError):
                continue
    return pids


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def table(results: list[dict]) -> list[str]:
    by = {r["name"]: r for r in results}
    plain, bare = by.get("plain"), by.get("bare")

    def ratio(r: dict, ref: dict | None) -> str:
        return f"{r['rps'] / ref['rps']:.2f}" if ref else "–"

    def paired(r: dict, ref: dict | None) -> str:
        """Round i against the reference's round i (run in the same minutes): the median ratio and its
        range. Slow drifts of the shared machine fall on both sides of each pair and cancel."""
        if not ref or len(r["rps_all"]) != len(ref["rps_all"]):
            return "–"
        each = sorted(a / b for a, b in zip(r["rps_all"], ref["rps_all"]))
        return f"{statistics.median(each):.2f} ({each[0]:.2f}–{each[-1]:.2f})"

    lines = [
        "| configuration | req/s at c=64 | × plain | × plain, round by round | × bare | gateway CPU per call "
        "| p50 / p99 at c=1 | stream TTFT p50 | p99 at c=64 | RSS after | errors | req/s of each round |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['rps']:,.0f} | {ratio(r, plain)} | {paired(r, plain)} | {ratio(r, bare)} "
            f"| {r['cpu_us']:.0f} µs "
            f"| {r['p50']:.3f} / {r['p99']:.3f} ms | {r['ttfc']:.3f} ms | {r['c64_p99']:.2f} ms "
            f"| {r['rss']:.0f} MB | {r['errors']} | {' / '.join(f'{x:,.0f}' for x in r['rps_all'])} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--ttfc-n", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3, help="c=64 runs per configuration, interleaved")
    ap.add_argument("--only", help="comma-separated configurations (default: all, bare included)")
    ap.add_argument("--out", help="write the table here too")
    ap.add_argument("--base-src", help="a checkout of an older tree: its gateway runs the same configurations too")
    ap.add_argument("--base-only", help="with --base-src: only these configurations (comma-separated)")
    ap.add_argument(
        "--c1-only",
        action="store_true",
        help="only concurrency 1: --rounds interleaved wrk -c1 runs per configuration, each round's p50/p99 "
        "and their medians (no c=64, no streams)",
    )
    args = ap.parse_args()
    names = ["bare", *LAYERS]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    if args.base_src:  # the same configurations on an older tree, interleaved with these: an A/B
        names += [n + BASE_SUFFIX for n in names if n != "bare" and (not args.base_only or n in args.base_only)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = workspace("mh-gov-bench-")
    sim, sim_url = start_sim()
    pg = redis = None
    env = dict(ENV)
    results: dict[str, dict] = {}
    procs: dict[str, subprocess.Popen] = {}
    urls: dict[str, str] = {}
    try:
        pg_url = None
        if "all-pg" in names:
            from e2e.services import RedisServer
            from pg import PostgresServer

            pg, redis = PostgresServer(), RedisServer()
            pg_url = pg.create_database()
            env["BENCH_REDIS_URL"] = redis.url
        for i, name in enumerate(names):  # every server up at once: idle ones cost nothing
            port = 4900 + i
            base = name.endswith(BASE_SUFFIX)
            urls[name] = f"http://127.0.0.1:{port}"
            procs[name] = (
                start_bare(sim_url, port)
                if name == "bare"
                else start_gateway(
                    name,
                    # An older tree gets a database of its own: its migrations may stop short of these.
                    config_for(name, sim_url, tmp, pg.create_database() if base and pg else pg_url),
                    port,
                    tmp,
                    {**env, "PYTHONPATH": str(Path(args.base_src) / "src")} if base else env,
                )
            )
        if args.c1_only:
            c1_rounds(names, procs, urls, sim.pid, tmp, args)
            return
        for name in names:
            results[name] = latency(name, procs[name], urls[name], sim.pid, tmp, args)
        # Rounds interleave the configurations, so a neighbour's load on the shared machine falls on
        # all of them alike; each figure is the median of its rounds.
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for _ in range(args.rounds):
            for name in names:
                runs[name].append(
                    throughput(procs[name], urls[name], sim.pid, tmp, args, [s for s in (pg, redis) if s])
                )
                print(name, f"{runs[name][-1]['rps']:.0f} req/s", f"{runs[name][-1]['cpu_us']:.0f} µs", flush=True)
        for name in names:
            r = results[name]
            r["rps_all"] = [x["rps"] for x in runs[name]]
            r["rps"] = statistics.median(r["rps_all"])
            r["cpu_us"] = statistics.median(x["cpu_us"] for x in runs[name])
            r["c64_p99"] = statistics.median(x["p99_ms"] for x in runs[name])
            r["errors"] += sum(x["errors"] for x in runs[name])
            r["rss"] = rss_mb(procs[name].pid)
    finally:
        for proc in procs.values():
            stop(proc)
        stop(sim)
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.stop()
    load = os.getloadavg()
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.seconds} s per wrk run, "
        f"{args.ttfc_n} sequential streams for TTFT; c=64 figures are the median of {args.rounds} interleaved "
        f"rounds; load average at the end {load[0]:.2f}.",
        f"Machine: {machine()}.",
        "",
        *table(list(results.values())),
        "",
    ]
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines))


if __name__ == "__main__":
    main()
