"""Instructions per call of the whole gateway process (every thread, user space), counted by valgrind's
callgrind: the assembled process under a fixed number of calls, so the cost that component benches
miss (the event loop's extra wake-ups, the writer threads, the GIL's hand-offs as far as they run
code) shows as instructions, deterministic enough to compare on a loaded machine.

    PYTHONPATH=src:tests python bench/governance_callgrind.py [--only bare,plain,+storage,all-sqlite,all-pg]
        [--calls 1000] [--concurrency 16] [--base-src /tmp/base/src] [--top 25]

For each configuration of bench/governance_bench.py: `multihome serve` under callgrind, a warm-up of
--warm calls, counters zeroed (`callgrind_control -z`), --calls calls at --concurrency, a dump
(`callgrind_control -d`); the total divided by the calls, and the top functions by inclusive and own
instructions per call (callgrind_annotate). Kernel work (system calls, page faults, context switches)
is not counted: read it beside bench/governance_threads.py's system time and context switches.
Valgrind runs one thread at a time, so batch sizes differ from a real run: compare configurations
and trees under the same settings, not these counts with wall-clock figures. Under valgrind a call
takes ~50x longer, so timers and pollers (per second, not per call) fall on ~50x fewer calls: the
same process is also measured idle for as long, and the total net of that rate is printed; it
over-corrects (a busy loop runs its pollers late, an idle one on time), so the truth lies between the
two figures. Loopback only; bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gateway_bench import CHAT, ENV, KEY, start_sim  # noqa: E402
from governance_bench import BASE_SUFFIX, LAYERS, config_for, slug, stop, wait_ready, workspace  # noqa: E402
from ports import free_port  # noqa: E402  (tests/: a port no other suite or bench on this machine holds)

BIN = Path(sys.executable).parent


async def calls(url: str, n: int, concurrency: int) -> int:
    """Exactly n chat calls, `concurrency` at a time; returns how many answered 200."""
    body = {**CHAT, "model": "bench"}
    headers = {"Authorization": f"Bearer {KEY}"}
    ok = 0
    left = n

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal ok, left
        while left > 0:
            left -= 1
            async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as resp:
                await resp.read()
                ok += resp.status == 200

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return ok


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True, timeout=300)


def measure(name: str, sim_url: str, tmp: Path, port: int, args, pg_url: str | None, redis_url: str | None) -> dict:
    env = dict(ENV)
    if redis_url is not None:
        env["BENCH_REDIS_URL"] = redis_url
    if name.endswith(BASE_SUFFIX):
        env["PYTHONPATH"] = args.base_src
    out = tmp / f"callgrind.{slug(name)}"
    log = open(tmp / f"{slug(name)}.vg.log", "w")
    if name == "bare":  # the reference pass-through (bench/bare_passthrough.py), under the same counting
        server = [str(HERE / "bare_passthrough.py"), "--port", str(port), "--upstream", sim_url + "/v1"]
        server += ["--model", "bench=bench-model", "--model", "bench-stream=bench-stream"]
        ready = f"http://127.0.0.1:{port}/"
    else:
        cfg = tmp / f"{slug(name)}.yaml"
        cfg.write_text(config_for(name, sim_url, tmp, pg_url))
        server = [str(BIN / "multihome"), "serve", "--config", str(cfg), "--port", str(port)]
        ready = f"http://127.0.0.1:{port}/readyz"
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", "--dump-instr=no", sys.executable] + server,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(ready, proc, seconds=600)
        url = f"http://127.0.0.1:{port}"
        asyncio.run(calls(url, args.warm, args.concurrency))
        time.sleep(1)  # the writers settle (the warm-up's batches written)
        control(proc.pid, "-z")
        t0 = time.monotonic()
        ok = asyncio.run(calls(url, args.calls, args.concurrency))
        time.sleep(1)  # the last batches are written, as they would be in a steady run
        busy_s = time.monotonic() - t0
        dump = dump_now(proc.pid, tmp, name)
        # The same process idle for as long: what its timers and pollers cost per second, which under
        # valgrind's slowness falls on ~50x fewer calls than in a real run, so it is taken out.
        control(proc.pid, "-z")
        t0 = time.monotonic()
        time.sleep(min(busy_s, args.idle_max_s))
        idle_s = time.monotonic() - t0
        idle = dump_now(proc.pid, tmp, name)
    finally:
        stop(proc)
        log.close()
    idle_rate = program_total(idle) / idle_s
    text, own = (annotate(dump, inclusive) for inclusive in ("yes", "no"))
    total = program_total(dump)
    return {
        "name": name,
        "ok": ok,
        "total": total,
        "idle_rate": idle_rate,
        "busy_s": busy_s,
        "net": total - idle_rate * busy_s,
        "incl": top_of(text, args.top),
        "own": top_of(own, args.top),
        "dump": dump,
    }


def annotate(dump: Path, inclusive: str) -> str:
    """callgrind_annotate's listing of every function, by inclusive ("yes") or own ("no") instructions."""
    return subprocess.run(
        ["callgrind_annotate", f"--inclusive={inclusive}", "--threshold=100", str(dump)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def dump_now(pid: int, tmp: Path, name: str) -> Path:
    """Dump the counters since the last zeroing; the new file's path."""
    before = set(tmp.glob(f"callgrind.{slug(name)}.{pid}.*"))
    control(pid, "-d")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = set(tmp.glob(f"callgrind.{slug(name)}.{pid}.*")) - before
        if new:
            time.sleep(0.5)  # written in full
            return max(new, key=lambda p: p.stat().st_mtime)
        time.sleep(0.2)
    raise RuntimeError(f"no callgrind dump from {pid}")


def program_total(dump: Path) -> int:
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith("summary:"):  # what callgrind_annotate calls PROGRAM TOTALS
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


def top_of(text: str, n: int) -> list[tuple[int, str]]:
    rows = []
    for m in re.finditer(r"^\s*([\d,]+)\s+\([\s\d.]+%\)\s+(\S.*)$", text, re.M):
        if "PROGRAM TOTALS" in m.group(2):
            continue
        rows.append((int(m.group(1).replace(",", "")), m.group(2)))
        if len(rows) >= n:
            break
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="plain,+storage,all-sqlite")
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--warm", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--base-src", help="an older tree's src/: the same configurations from it too")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--idle-max-s", type=float, default=120, help="the idle measurement's longest wait")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n in LAYERS or n == "bare"]
    if args.base_src:
        names = [x for n in names for x in ((n,) if n == "bare" else (n, n + BASE_SUFFIX))]
    tmp = workspace("mh-gov-cg-", keep=True)  # its dumps are read afterwards
    sim, sim_url = start_sim()
    pg = redis = None
    results = []
    try:
        if any(n.startswith("all-pg") for n in names):  # real servers, as the tests start them
            from e2e.services import RedisServer
            from pg import PostgresServer

            pg, redis = PostgresServer(), RedisServer()
        for name in names:
            pg_url = pg.create_database() if pg is not None and name.startswith("all-pg") else None
            r = measure(name, sim_url, tmp, free_port(), args, pg_url, redis.url if redis is not None else None)
            print(
                f"{name}: {r['total'] / args.calls:,.0f} instructions per call over {r['busy_s']:.0f} s, idle "
                f"{r['idle_rate']:,.0f} per second; net of idle {r['net'] / args.calls:,.0f} per call "
                f"({r['ok']} of {args.calls} answered 200; dump {r['dump']})",
                flush=True,
            )
            results.append(r)
    finally:
        stop(sim)
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.stop()
    print(f"\nload average {os.getloadavg()[0]:.2f} (instruction counts do not depend on it)\n")
    for r in results:
        k = 1 / args.calls
        print(
            f"### {r['name']}: {r['total'] * k:,.0f} instructions per call ({r['net'] * k:,.0f} net of the idle "
            f"process's {r['idle_rate']:,.0f} per second)\n"
        )
        print("| inclusive per call | function |\n|---|---|")
        for count, fn in r["incl"]:
            print(f"| {count * k:,.0f} | `{fn[:140]}` |")
        print("\n| own per call | function |\n|---|---|")
        for count, fn in r["own"]:
            print(f"| {count * k:,.0f} | `{fn[:140]}` |")
        print()


if __name__ == "__main__":
    main()
