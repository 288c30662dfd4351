"""Event-loop stalls at concurrency 1, in process: how long the loop is kept from a waiting request.

The app `multihome serve` builds (bench/plain_percall.py: canned upstream, no sockets) gets one call
at a time, paced at `--rate` calls per second (wrk -c1 runs ~1,500/s), for `--seconds`. A monitor
callback reschedules itself with call_soon, so it runs once per loop iteration: the gap between two
of its runs is how long one iteration kept the loop (what a request arriving then waits). It also
starts the calls, as a socket read would: a call due during a long iteration starts late by that much.

Reported: iterations longer than each threshold per second, the longest, and each call's time from
when it was due to its answer (p50/p99/max; in process, so a floor of the end-to-end figure).
`--attrib` runs on asyncio's own loop (not uvloop) and times every callback it runs: the slow ones
by name (a task by its coroutine), the same as asyncio's debug `slow_callback_duration` names them.

    PYTHONPATH=src:tests python bench/loop_stalls.py --config all-pg [--rate 1500] [--seconds 10]
        [--attrib] [--src OTHER/src ...]

Configurations: plain_percall's (all-sqlite, ...) and all-pg (its storage on a throwaway PostgreSQL:
tests/pg.py), all-pg-redis (and the counters in a throwaway Redis, as governance_bench's all-pg).
Judge by the stall counts, not by the latencies: this machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
THRESHOLDS_MS = (0.3, 0.5, 1.0, 2.0)


def _config(name: str, tmp: str, pg_url: str | None, redis_url: str | None) -> str:
    import plain_percall as pp

    if not name.startswith("all-pg"):
        return pp.config_text(name, tmp)
    text = pp.config_text("+audit", tmp) + f"storage: {{url: '{pg_url}'}}\n" + pp.LAYERS["metering"].format(tmp=tmp)
    if name == "all-pg-redis":
        os.environ["BENCH_REDIS_URL"] = redis_url or ""
        text += "  redis_url_env: BENCH_REDIS_URL\n"
    return text


def _where(task: asyncio.Task) -> str:
    """The innermost frame the task's coroutine chain waits in (file:line function)."""
    coro: Any = task.get_coro()
    frame = None
    while coro is not None:
        f = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if f is not None:
            frame = f
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
    if frame is None:
        return "-"
    return f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno} {frame.f_code.co_name}"


def _sched() -> tuple[float, float]:
    """(ns this thread waited on a run queue, its involuntary context switches) so far."""
    wait = float(open("/proc/thread-self/schedstat").read().split()[1])
    for line in open("/proc/thread-self/status"):
        if line.startswith("nonvoluntary_ctxt_switches:"):
            return wait, float(line.split()[1])
    return wait, 0.0


_LONG_S = 0.0003  # --threshold-ms, set by _run
_BY_OWNER: collections.Counter = collections.Counter()  # --attrib: every callback, by its owner: (n, ms)


def _owner(cb: Any) -> str:
    task = getattr(cb, "__self__", None)
    if isinstance(task, asyncio.Task):
        return getattr(task.get_coro(), "__qualname__", "?")
    return getattr(cb, "__qualname__", None) or type(cb).__name__


def _short(cb: Any, before: str | None) -> str:
    """A callback's name on one line: a task's coroutine and where it resumed from."""
    task = getattr(cb, "__self__", None)
    if isinstance(task, asyncio.Task):
        return f"{getattr(task.get_coro(), '__qualname__', '?')}@{(before or '-').split(' ')[0]}"
    return getattr(cb, "__qualname__", None) or repr(cb)[:40]


def _name(cb: Any, before: str | None) -> str:
    task = getattr(cb, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro = task.get_coro()
        after = "done" if task.done() else _where(task)
        return f"task {getattr(coro, '__qualname__', coro)}\n        from {before}\n        to   {after}"
    return getattr(cb, "__qualname__", None) or repr(cb)[:80]


def _gc_pauses() -> list[tuple[int, float, int]]:
    """Time each cyclic-GC collection (thread CPU): (generation, seconds, objects collected), appended."""
    import gc

    pauses: list[tuple[int, float, int]] = []
    started = [0.0]

    def cb(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.thread_time()
        else:
            pauses.append((info["generation"], time.thread_time() - started[0], info["collected"]))

    gc.callbacks.append(cb)
    return pauses


# --attrib: the callbacks over _PART_S of the current loop iteration (tick() ends one), and what the
# iterations whose CPU passed the threshold were made of, by their callbacks' names (counts).
_PART_S = 0.00005
_ITERATION: list[tuple[float, Any, str | None]] = []
_MADE_OF: collections.Counter = collections.Counter()


def _attribute(threshold_s: float) -> collections.Counter:
    """Time every callback asyncio's own loop runs (thread CPU); count the slow ones by name (ms totals)."""
    slow: collections.Counter = collections.Counter()
    run = asyncio.events.Handle._run

    def timed(self) -> None:
        task = getattr(self._callback, "__self__", None)
        before = _where(task) if isinstance(task, asyncio.Task) and not task.done() else None
        t0 = time.thread_time()
        run(self)
        took = time.thread_time() - t0  # the loop thread's CPU: work, not time descheduled
        if took > _PART_S:
            _ITERATION.append((took, self._callback, before))
        who = _owner(self._callback)
        _BY_OWNER[(who, "n")] += 1
        _BY_OWNER[(who, "ms")] += took * 1000
        if took > threshold_s:
            key = _name(self._callback, before)
            slow[(key, "n")] += 1
            slow[(key, "ms")] += took * 1000
            slow[(key, "max")] = max(slow[(key, "max")], took * 1000)

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]
    return slow


async def _drive(app: Any, rate: float, seconds: float, gaps: list[tuple[float, float]], waits: list[float]) -> None:
    import plain_percall as pp

    loop = asyncio.get_running_loop()
    scope = pp.chat_scope()
    statuses: collections.Counter = collections.Counter()
    receive, send = _asgi_io(pp, statuses)

    calls = int(rate * seconds)
    done = loop.create_future()
    state = {"i": 0, "busy": False, "due": 0.0}
    t0 = time.perf_counter()
    last, last_cpu = t0, time.thread_time()

    async def one(due: float) -> None:
        await app(dict(scope), receive, send)
        waits.append(time.perf_counter() - due)
        state["busy"] = False

    def tick() -> None:
        nonlocal last, last_cpu
        now, cpu = time.perf_counter(), time.thread_time()
        if now - last > 0.0002:  # (wall, this thread's CPU) of an iteration worth counting
            gaps.append((now - last, cpu - last_cpu))
            if cpu - last_cpu > _LONG_S and _ITERATION:
                parts = sorted(_ITERATION, key=lambda p: -p[0])[:3]
                _MADE_OF[" + ".join(_short(cb, before) for _, cb, before in parts)] += 1
        _ITERATION.clear()
        last, last_cpu = now, cpu
        i = state["i"]
        if not state["busy"]:
            if i >= calls:
                if not done.done():
                    done.set_result(None)
                return
            due = max(t0 + i / rate, state["due"])
            if now >= due:
                state["i"] = i + 1
                state["busy"] = True
                state["due"] = now  # closed loop (wrk -c1): the next is due no earlier than this one started
                loop.create_task(one(due))
        loop.call_soon(tick)

    loop.call_soon(tick)
    await done
    assert statuses[200] == calls, statuses


_PACER = """
import os, struct, sys, time
fd, rate, n = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
t0 = time.perf_counter() + 0.05
for i in range(n):
    due = t0 + i / rate
    while (left := due - time.perf_counter()) > 0.0003:
        time.sleep(left - 0.0002)
    while time.perf_counter() < due:
        pass
    os.write(fd, struct.pack("d", due))
"""


async def _paced(app: Any, rate: float, seconds: float, lags: list[float], waits: list[float]) -> None:
    """Requests from another process at `rate` a second (CLOCK_MONOTONIC stamps of when each was due,
    written to a pipe): the loop sleeps in epoll as a server's does, and a request waits for whatever
    holds the loop when it arrives. lags: due -> its call started; waits: due -> answered."""
    import struct

    import plain_percall as pp

    loop = asyncio.get_running_loop()
    calls = int(rate * seconds)
    r, w = os.pipe()
    os.set_blocking(r, False)
    pacer = subprocess.Popen([sys.executable, "-c", _PACER, str(w), str(rate), str(calls)], pass_fds=(w,))
    os.close(w)
    queue: list[float] = []
    done = loop.create_future()
    busy = False
    buf = b""
    scope = pp.chat_scope()
    statuses: collections.Counter = collections.Counter()
    receive, send = _asgi_io(pp, statuses)

    async def serve() -> None:
        nonlocal busy
        while queue:
            due = queue.pop(0)
            lags.append(time.perf_counter() - due)
            await app(dict(scope), receive, send)
            waits.append(time.perf_counter() - due)
        busy = False
        if len(waits) >= calls and not done.done():
            done.set_result(None)

    def readable() -> None:
        nonlocal buf, busy
        buf += os.read(r, 65536)
        k = len(buf) // 8 * 8
        queue.extend(struct.unpack(f"{k // 8}d", buf[:k]))
        buf = buf[k:]
        if queue and not busy:
            busy = True
            loop.create_task(serve())

    loop.add_reader(r, readable)
    try:
        await done
    finally:
        loop.remove_reader(r)
        os.close(r)
        pacer.wait(10)
    assert statuses[200] == calls, statuses


def _asgi_io(pp: Any, statuses: collections.Counter) -> tuple[Any, Any]:
    """The ASGI receive and send of one call of plain_percall's request: statuses counted."""

    async def receive():
        return {"type": "http.request", "body": pp.BODY, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            statuses[message["status"]] += 1

    return receive, send


async def _run(args: argparse.Namespace, out: dict) -> None:
    import plain_percall as pp

    os.environ.setdefault("BENCH_CLIENT_KEY", "bench-client-key")
    os.environ.setdefault("BENCH_SIM_KEY", "bench-sim-key")
    import tempfile

    from multihome.app import build_app
    from multihome.config.load import parse_config

    tmp = tempfile.mkdtemp(prefix="stalls-")
    app: Any = build_app(parse_config(_config(args.config, tmp, args.pg_url, args.redis_url)))
    stop = await pp.started_app(app)
    pp.canned(app)
    warm_gaps: list[tuple[float, float]] = []
    await _drive(app, args.rate, 1.0, warm_gaps, [])  # warm: connections made, statements prepared
    global _LONG_S
    _LONG_S = args.threshold_ms / 1000
    slow = _attribute(args.threshold_ms / 1000) if args.attrib else None
    gaps: list[tuple[float, float]] = []
    waits: list[float] = []
    pauses = _gc_pauses()
    sched0 = _sched()
    t0 = time.perf_counter()
    if args.paced:
        lags: list[float] = []
        await _paced(app, args.rate, args.seconds, lags, waits)
        gaps = [(lag, 0.0) for lag in lags if lag > 0.0002]
    else:
        await _drive(app, args.rate, args.seconds, gaps, waits)
    elapsed = time.perf_counter() - t0
    import gc

    gc.callbacks.clear()
    sched = [(b - a) / elapsed for a, b in zip(sched0, _sched(), strict=True)]
    if slow is not None:
        asyncio.events.Handle._run = _ORIG_RUN  # type: ignore[method-assign]
    await stop()
    waits.sort()
    out.update(
        seconds=elapsed,
        over={str(t): sum(g * 1000 > t for g, _ in gaps) / elapsed for t in THRESHOLDS_MS},
        # by the loop thread's own CPU in the iteration: work done, not time descheduled or waiting for the GIL
        over_cpu={str(t): sum(c * 1000 > t for _, c in gaps) / elapsed for t in THRESHOLDS_MS},
        # the loop thread runnable but not running (another process or thread on its CPU), and how often
        # it was preempted: what PostgreSQL's backends (or anything else) on the same CPU cost it
        rq_wait_ms_per_s=sched[0] / 1e6,
        preempted_per_s=sched[1],
        max_ms=max(g for g, _ in gaps) * 1000,
        max_cpu_ms=max(c for _, c in gaps) * 1000,
        paced=args.paced,
        # cyclic-GC collections by generation: how many a second, their mean and longest (thread CPU, ms)
        gc={
            str(g): (
                sum(1 for p in pauses if p[0] == g) / elapsed,
                sum(p[1] for p in pauses if p[0] == g) * 1000 / max(1, sum(1 for p in pauses if p[0] == g)),
                max((p[1] for p in pauses if p[0] == g), default=0.0) * 1000,
            )
            for g in (0, 1, 2)
        },
        gc_objects=len(__import__("gc").get_objects()),
        top_ms=[(g * 1000, c * 1000) for g, c in sorted(gaps, reverse=True)[:8]],
        wait_ms={
            "p50": waits[len(waits) // 2] * 1000,
            "p99": waits[int(len(waits) * 0.99)] * 1000,
            "max": waits[-1] * 1000,
        },
    )
    if slow is not None:
        names = {k[0] for k in slow}
        out["slow"] = sorted(
            ((n, slow[(n, "n")] / elapsed, slow[(n, "ms")] / max(1, slow[(n, "n")]), slow[(n, "max")]) for n in names),
            key=lambda r: -r[1],
        )
        owners = {k[0] for k in _BY_OWNER}
        out["owners"] = sorted(
            ((o, _BY_OWNER[(o, "n")] / elapsed, _BY_OWNER[(o, "ms")] / elapsed) for o in owners), key=lambda r: -r[2]
        )[:14]
        out["made_of"] = [(k, n / elapsed) for k, n in _MADE_OF.most_common(12)]


_ORIG_RUN = asyncio.events.Handle._run


def child(args: argparse.Namespace) -> None:
    import logging

    sys.path[:0] = [HERE]
    logging.disable(logging.WARNING)
    out: dict = {}
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    if args.attrib:
        asyncio.run(_run(args, out))
    else:
        import uvloop

        uvloop.run(_run(args, out))
    print(json.dumps(out))


def report(label: str, out: dict) -> None:
    w = out["wait_ms"]
    print(f"{label}: call due->answer p50 {w['p50']:.3f} p99 {w['p99']:.3f} max {w['max']:.2f} ms")
    over = " ".join(f">{t}ms {v:6.1f}/s" for t, v in out["over"].items())
    if out.get("paced"):
        print(f"   requests waiting, due -> start: {over}  max {out['max_ms']:.2f} ms")
    else:
        print(f"   iterations, wall: {over}  max {out['max_ms']:.2f} ms")
        over = " ".join(f">{t}ms {v:6.1f}/s" for t, v in out["over_cpu"].items())
        print(f"   iterations, CPU:  {over}  max {out['max_cpu_ms']:.2f} ms")
    rq, pre = out["rq_wait_ms_per_s"], out["preempted_per_s"]
    print(f"   loop thread: waited for a CPU {rq:.1f} ms/s, preempted {pre:.1f}/s")
    if "gc" in out:
        gcs = " ".join(f"gen{g} {n:.1f}/s mean {m:.3f} max {x:.2f} ms;" for g, (n, m, x) in out["gc"].items())
        print(f"   gc: {gcs} {out['gc_objects']} objects tracked")
    print("   longest (wall/CPU ms): " + " ".join(f"{g:.2f}/{c:.2f}" for g, c in out["top_ms"]))
    for name, per_s, mean, mx in out.get("slow", []):
        print(f"   {per_s:7.1f}/s  mean {mean:.2f} ms  max {mx:.2f} ms  {name}")
    if out.get("owners"):
        print("   the loop's CPU by owner (every callback): runs/s, ms/s, mean ms")
    for o, n, ms in out.get("owners", []):
        print(f"   {n:8.1f}/s {ms:7.2f} ms/s {ms / max(n, 1e-9):.3f}  {o}")
    if out.get("made_of"):
        print("   iterations over the threshold by CPU, their longest callbacks (over 0.05 ms):")
    for parts, per_s in out.get("made_of", []):
        print(f"   {per_s:7.1f}/s  {parts}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="all-pg")
    ap.add_argument("--rate", type=float, default=1500)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--threshold-ms", type=float, default=0.3)
    ap.add_argument("--attrib", action="store_true")
    ap.add_argument("--src", action="append", default=[], help="run these trees' src/ (repeatable), alternating")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument(
        "--paced",
        action="store_true",
        help="no monitor spinning the loop: requests paced by another process through a pipe; 'iterations' "
        "are then each request's wait from when it was due to its call's start",
    )
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--pg-url")
    ap.add_argument("--redis-url")
    ap.add_argument("--cpus", help="pin the app's process to these CPUs (e.g. 0)")
    ap.add_argument("--pg-cpus", help="pin PostgreSQL (postmaster, so every backend) to these CPUs (e.g. 1)")
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    pg = redis = None
    sys.path[:0] = [HERE, os.path.join(HERE, "..", "tests")]
    try:
        if args.config.startswith("all-pg"):
            from pg import PostgresServer

            pg = PostgresServer()
            if args.pg_cpus:  # backends are forked by the postmaster later and inherit its CPUs
                pid = int((pg.data / "postmaster.pid").read_text().split()[0])
                subprocess.run(["taskset", "-a", "-p", "-c", args.pg_cpus, str(pid)], check=True, capture_output=True)
        if args.config == "all-pg-redis":
            from e2e.services import RedisServer

            redis = RedisServer()
        trees = args.src or [os.path.abspath("src")]
        for r in range(args.rounds):
            for src in trees:
                cmd = [sys.executable, __file__, "--child", "--config", args.config, "--rate", str(args.rate)]
                cmd += ["--seconds", str(args.seconds), "--threshold-ms", str(args.threshold_ms)]
                cmd += ["--attrib"] if args.attrib else []
                cmd += ["--cpus", args.cpus] if args.cpus else []
                cmd += ["--paced"] if args.paced else []
                if pg is not None:
                    cmd += ["--pg-url", pg.create_database()]
                if redis is not None:
                    cmd += ["--redis-url", redis.url]
                env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.path.join(HERE, "..", "tests")]))
                res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.seconds * 3 + 120)
                if res.returncode:
                    print(res.stderr[-3000:])
                    raise SystemExit(f"{src}: exited {res.returncode}")
                report(f"[{r}] {args.config} {src}", json.loads(res.stdout.strip().splitlines()[-1]))
    finally:
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.stop()


if __name__ == "__main__":
    main()
