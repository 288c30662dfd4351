"""Where a stored Responses turn spends the time a chat completion does not: the real app in process,
called through ASGI (no HTTP server, no client in the process's CPU), against the OpenAI simulator in
another process. The four calls of bench/responses_bench.py, interleaved call by call at c=1 (with
`--one-step`: a first turn not stored, what each agent step pays, against a chat call of its one message).

    PYTHONPATH=src python bench/responses_percall.py [--n 400] [--sync full] [--profile cprofile|none] [--one-step]

Per call and kind: wall time, the event loop thread's CPU (time.thread_time_ns) and the process's
(every thread: the SQLite reader and writer too), medians over `--n` calls. `--calls-only K` runs K
calls of each of `--kinds` after the set-up and nothing else (for callgrind: run it with K and with 0,
the difference over K is the instructions per call, start-up cancelling). Loopback only; bounded by --n.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_bench import ENV, KEY, start_sim
from responses_bench import CONFIG, calls, conversation

_encode = msgspec.json.encode


class Client:
    """ASGI calls to the app in process, as uvicorn would make them."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def post(self, path: str, body: bytes) -> dict:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"authorization", f"Bearer {KEY}".encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
        }
        sent = False
        status = 0
        parts: list[bytes] = []
        gone = asyncio.Event()

        async def receive() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))

        await self.app(scope, receive, send)
        gone.set()
        data = b"".join(parts)
        if status != 200:
            raise RuntimeError(f"{path}: {status} {data[:300]!r}")
        return msgspec.json.decode(data)


SEGMENTS: dict[tuple[str, str], list[int]] = {}  # (kind, step) -> [calls, loop CPU ns, wall ns]
KIND = ["setup"]  # the kind of call under way


def _segment(owner: Any, name: str, label: str) -> None:
    """Wrap `owner.name` to add its loop-thread CPU and wall time (inclusive) to SEGMENTS[label]."""
    import inspect

    fn = getattr(owner, name, None)
    if fn is None:  # not in this tree (the base of an A/B)
        return

    def add(c0: int, w0: int) -> None:
        acc = SEGMENTS.setdefault((KIND[0], label), [0, 0, 0])
        acc[0] += 1
        acc[1] += time.thread_time_ns() - c0
        acc[2] += time.perf_counter_ns() - w0

    async def timed(pending: Any, c0: int, w0: int) -> Any:
        try:
            return await pending
        finally:
            add(c0, w0)

    def wrapped(*a: Any, **kw: Any) -> Any:
        c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        out = fn(*a, **kw)
        if inspect.isawaitable(out):  # a coroutine function's: timed until it is done
            return timed(out, c0, w0)
        add(c0, w0)
        return out

    setattr(owner, name, wrapped)


def _segments() -> None:
    from multihome.api import pipeline
    from multihome.api.openai import chat
    from multihome.api.responses import door
    from multihome.state import cache, store
    from multihome.storage import sqlite_threads

    for owner, name, label in (
        (door, "parse_create", "parse_create"),
        (door.ResponsesDoor, "_context", "context (chain read)"),
        (store.StateStore, "_run_read", "  the reader hop"),
        (store.StateStore, "chain", "  chain"),
        (cache.OpenedResponses, "held_chain", "    held_chain"),
        (sqlite_threads.SqliteThreads, "read_here", "    read_here"),
        (sqlite_threads.SqliteThreads, "write_here", "    write_here"),
        (sqlite_threads.SqliteThreads, "write_raw", "    write_raw"),
        (door, "to_canonical", "to_canonical (whole)"),
        (door.HeldContexts, "request", "held.request"),
        (door, "run_turn", "run_turn (pipeline.run)"),
        (chat, "parse_chat", "chat: parse_chat"),
        (pipeline.Pipeline, "run", "pipeline.run"),
        (pipeline, "begin_call", "  begin_call"),
        (pipeline, "_admit", "  _admit"),
        (pipeline.Pipeline, "shape", "  shape (policy)"),
        (pipeline.Router, "route", "  router.route"),
        (pipeline, "_durable", "  _durable"),
        (door, "from_completion", "from_completion"),
        (door.Shell, "render", "shell.render"),
        (door.ResponsesDoor, "_keep", "_keep"),
        (store.StateStore, "seal_response", "  seal_response"),
        (door, "finish_unary", "finish_unary (resp)"),
        (chat, "finish_unary", "finish_unary (chat)"),
        (door, "send_json", "send_json (resp)"),
        (chat, "send_json", "send_json (chat)"),
    ):
        _segment(owner, name, label)


async def run(config_text: str, args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    from multihome.app import build_app
    from multihome.config import parse_config

    if args.segments:
        _segments()

    app = build_app(parse_config(config_text))
    lifespan: asyncio.Queue = asyncio.Queue()
    await lifespan.put({"type": "lifespan.startup"})
    started = asyncio.Event()

    async def lsend(message: dict) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()
        elif message["type"] == "lifespan.startup.failed":
            raise RuntimeError(message)

    life = asyncio.create_task(app(({"type": "lifespan"}), lifespan.get, lsend))
    await asyncio.wait_for(started.wait(), 60)
    client = Client(app)
    try:
        last, messages = await conversation(client.post)
        kinds = {k: call for k, call in calls(last, messages).items() if k != "response, native"}
        if args.one_step:  # what each agent step pays: a first turn, not stored, against one chat message
            question = messages[0]["content"]
            kinds = {
                "chat, one message": ("/v1/chat/completions", {"model": "bench", "messages": [messages[0]]}),
                "response, one step": ("/v1/responses", {"model": "bench", "input": question, "store": False}),
            }
        bodies = {k: (path, _encode(body)) for k, (path, body) in kinds.items()}
        for path, body in bodies.values():  # warm every path
            for _ in range(30):
                await client.post(path, body)
        out: dict[str, dict[str, list[float]]] = {k: {"wall": [], "loop": [], "proc": []} for k in kinds}
        if args.calls_only is not None:
            chosen = [bodies[k] for k in args.kinds.split(",")]
            for _ in range(args.calls_only):
                for path, body in chosen:
                    await client.post(path, body)
            return out
        profiler = None
        if args.profile == "cprofile":
            import cProfile

            profiler = cProfile.Profile()
        SEGMENTS.clear()
        for _ in range(args.n):
            for k, (path, body) in bodies.items():
                KIND[0] = k
                if profiler is not None and k == args.profile_kind:
                    profiler.enable()
                w0, l0, p0 = time.perf_counter_ns(), time.thread_time_ns(), time.process_time_ns()
                await client.post(path, body)
                p1, l1, w1 = time.process_time_ns(), time.thread_time_ns(), time.perf_counter_ns()
                if profiler is not None and k == args.profile_kind:
                    profiler.disable()
                out[k]["wall"].append((w1 - w0) / 1e6)
                out[k]["loop"].append((l1 - l0) / 1e6)
                out[k]["proc"].append((p1 - p0) / 1e6)
        if profiler is not None:
            import pstats

            pstats.Stats(profiler).sort_stats(args.sort).print_stats(45)
        return out
    finally:
        await lifespan.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(life, 30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--sync", default="full")
    ap.add_argument("--profile", default="none", choices=("none", "cprofile"))
    ap.add_argument("--profile-kind", default="response")
    ap.add_argument("--sort", default="tottime")
    ap.add_argument("--calls-only", type=int, default=None)
    ap.add_argument("--kinds", default="chat,response,store false", help="with --calls-only: the kinds called")
    ap.add_argument("--segments", action="store_true", help="loop CPU and wall per call of the door's steps")
    ap.add_argument("--one-step", action="store_true", help="a first turn not stored against one chat message")
    args = ap.parse_args()
    os.environ.update({k: v for k, v in ENV.items() if k.startswith("BENCH_")})
    tmp = Path(tempfile.mkdtemp(prefix="responses-percall-"))
    sim, sim_url = start_sim()
    try:
        config = CONFIG.format(sim=sim_url, db=tmp / "multihome.db", tmp=tmp, sync=args.sync)
        res = asyncio.run(run(config, args))
    finally:
        sim.terminate()
        sim.wait(10)
    if args.calls_only is not None:
        return
    print(f"state_sync {args.sync}; {args.n} calls of each kind, interleaved; load {os.getloadavg()[0]:.1f}")
    print("| call | wall p50 | loop CPU p50 | process CPU p50 | wall p10 | loop CPU p10 | process CPU p10 |")
    print("|---|---|---|---|---|---|---|")
    for k, m in res.items():
        q = {name: statistics.quantiles(v, n=10) for name, v in m.items()}
        med = {name: statistics.median(v) for name, v in m.items()}
        print(
            f"| {k} | {med['wall']:.3f} | {med['loop']:.3f} | {med['proc']:.3f} | "
            f"{q['wall'][0]:.3f} | {q['loop'][0]:.3f} | {q['proc'][0]:.3f} |"
        )
    if args.segments:
        print("| call | step | calls | loop CPU µs per call | wall µs per call |")
        print("|---|---|---|---|---|")
        for (kind, label), (calls, cpu, wall) in sorted(SEGMENTS.items()):
            if calls:
                print(f"| {kind} | {label} | {calls} | {cpu / calls / 1e3:.1f} | {wall / calls / 1e3:.1f} |")


if __name__ == "__main__":
    main()
