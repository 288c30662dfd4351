"""Where the governed gateway spends its time: one configuration of bench/governance_bench.py under
`wrk` at concurrency 64, sampled by py-spy, summarised as the top functions in µs per call.

    PYTHONPATH=src:tests .venv/bin/python bench/governance_profile.py [--config all-sqlite] [--seconds 15] [--native]
        [--out DIR] [--pin-services]

The gateway is pinned to core 0, the simulator and wrk to core 1 (as in the governance bench). py-spy
samples every thread (`--threads`, 200 Hz; `--gil`: only the thread holding the GIL); the summary
divides each function's samples by the calls served, so the figures read as µs of that thread's
time per call. A flame graph (speedscope JSON) is left in --out. `all-pg` starts PostgreSQL and Redis as the
tests do, free on both cores unless `--pin-services` (then on core 1 with the simulator and wrk). Loopback
only; bounded by --seconds.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gateway_bench import ENV, KEY, set_layout, start_sim, wrk  # noqa: E402
from governance_bench import (  # noqa: E402
    LAYERS,
    config_for,
    cpu_seconds,
    service_pids,
    start_gateway,
    stop,
    workspace,
)

BIN = Path(sys.executable).parent
CLK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, tuple[float, float]]:
    """CPU seconds (utime, stime) of each thread of the process, by thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (int(fields[11]) / CLK, int(fields[12]) / CLK)
    return out


def thread_names(path: Path) -> dict[int, str]:
    """py-spy's names of the threads ("Thread 123 \"MainThread\""), by thread id."""
    names = {}
    for profile in json.loads(path.read_text())["profiles"]:
        parts = profile["name"].split(" ", 2)
        if len(parts) == 3 and parts[1].isdigit():
            names[int(parts[1])] = parts[2].strip('"')
    return names


def summarise(path: Path, calls: int, seconds: float, rate: int, top: int) -> list[str]:
    """Own and total time per function (µs per call) from a speedscope profile."""
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    samples = 0
    for profile in data["profiles"]:
        for stack in profile["samples"]:
            samples += 1
            threads[profile["name"].split(" ")[-1] if profile["name"] else "?"] += 1
            names = [f"{frames[i]['name']} ({Path(frames[i].get('file', '?')).name})" for i in stack]
            if names:
                own[names[-1]] += 1
            for name in set(names):
                total[name] += 1
    per_call = 1e6 / rate / max(calls, 1)  # one sample is 1/rate s of a thread's time
    lines = [f"{samples} samples over {seconds:.0f} s, {calls} calls; µs per call of sampled thread time", ""]
    lines.append("| own µs/call | total µs/call | function |")
    lines.append("|---|---|---|")
    for name, n in own.most_common(top):
        lines.append(f"| {n * per_call:.1f} | {total[name] * per_call:.1f} | `{name}` |")
    lines += ["", "| total µs/call | function (inclusive, top) |", "|---|---|"]
    for name, n in total.most_common(top):
        lines.append(f"| {n * per_call:.1f} | `{name}` |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="all-sqlite", choices=list(LAYERS))
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--native", action="store_true")
    ap.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--pin-services",
        action="store_true",
        help="all-pg: PostgreSQL (every process of it) and Redis on the simulator's core, off the gateway's",
    )
    ap.add_argument("--py-spy", default=None, help="the py-spy binary (default: beside this Python, else on PATH)")
    args = ap.parse_args()
    tmp = workspace("mh-gov-prof-", keep=args.out is None)  # the flame graph stays
    out = Path(args.out) if args.out else tmp
    out.mkdir(parents=True, exist_ok=True)
    sim, sim_url = start_sim()
    env, pg_url, services = dict(ENV), None, []
    if args.config.startswith("all-pg"):  # real servers, as the tests start them (run with PYTHONPATH=src:tests)
        from e2e.services import RedisServer
        from pg import PostgresServer

        pg, redis = PostgresServer(), RedisServer()
        services = [pg, redis]
        pg_url, env["BENCH_REDIS_URL"] = pg.create_database(), redis.url
    gw = start_gateway(args.config, config_for(args.config, sim_url, tmp, pg_url), 4990, tmp, env)
    url = "http://127.0.0.1:4990"
    try:
        set_layout(gw.pid, sim.pid, pinned=False)
        wrk(url, "bench", KEY, connections=8, seconds=2, tmp=tmp)
        core = set_layout(gw.pid, sim.pid, pinned=True)
        if args.pin_services and core is not None:
            for pid in service_pids(services):
                os.sched_setaffinity(pid, {core})
        prof = out / f"{args.config.strip('+')}.speedscope.json"
        spy_bin = args.py_spy or (
            str(BIN / "py-spy") if (BIN / "py-spy").exists() else shutil.which("py-spy") or "py-spy"
        )
        spy = subprocess.Popen(
            [spy_bin, "record", "--pid", str(gw.pid), "-r", str(args.rate), "-d", str(args.seconds + 1)]
            + ["--threads", "--format", "speedscope", "-o", str(prof)]
            + (["--native"] if args.native else ["--nonblocking"])  # native stacks need the process paused
            + (["--gil"] if args.gil else []),
            stdout=subprocess.DEVNULL,
        )
        time.sleep(1)
        cpu0, threads0 = cpu_seconds(gw.pid), thread_cpu(gw.pid)
        c64 = wrk(url, "bench", KEY, connections=64, seconds=args.seconds, tmp=tmp, core=core)
        cpu, threads1 = cpu_seconds(gw.pid) - cpu0, thread_cpu(gw.pid)
        spy.wait(60)
    finally:
        stop(gw)
        stop(sim)
        for service in services:
            service.stop()
    load = os.getloadavg()[0]
    head = (
        f"{args.config}: {c64['rps']:,.0f} req/s at c=64, gateway CPU {cpu / max(c64['requests'], 1) * 1e6:.0f} µs "
        f"per call, load average {load:.2f}"
    )
    names = thread_names(prof)
    k = 1e6 / max(c64["requests"], 1)
    zero = (0.0, 0.0)
    used = {t: (u - threads0.get(t, zero)[0], s - threads0.get(t, zero)[1]) for t, (u, s) in threads1.items()}
    cpu_line = ", ".join(
        f"{names.get(t, t)} {(u + s) * k:.0f} µs ({s * k:.0f} system)"
        for t, (u, s) in sorted(used.items(), key=lambda item: -sum(item[1]))
        if u + s > 0
    )
    lines = [head, "", "CPU per call by thread (from /proc): " + cpu_line, ""]
    lines += summarise(prof, c64["requests"], args.seconds, args.rate, args.top)
    text = "\n".join(lines)
    (out / f"{args.config.strip('+')}.summary.md").write_text(
        text + "\n"
    )  # before printing: a closed pipe loses nothing
    print(text)


if __name__ == "__main__":
    main()
