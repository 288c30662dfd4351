"""Instructions per call of the plain gateway's own work, in process: the app `multihome serve` builds
for the plain configuration of bench/governance_bench.py (keys from the environment, nothing else),
its ASGI callable called directly with a chat request, its deployment's upstream replaced by a canned
OpenAI answer, so no socket, uvicorn or aiohttp is counted: what is left is the gateway's own work
per call (route, identify, parse, decide, plan, attempt, headers, the access log line). Counted by
valgrind's callgrind as bench/percall_instructions.py does: N calls and 0 calls in fresh processes,
the difference over N (start-up cancels); `--base-src` counts another tree (main checked out
elsewhere) in the same run. `--profile` prints cProfile's per-call function counts and top functions
instead (no valgrind).

    PYTHONPATH=src python bench/plain_percall.py [--calls 2000] [--base-src /tmp/main/src] [--no-access-log]
        [--src TREE/src ...] [--config all-sqlite] [--opcodes | --cpu | --profile] [--yield]

`--config` turns on the governance layers of bench/governance_bench.py (storage on a SQLite file,
metering's key budget and rate limit, the audit trail), their files in a temporary directory: what
the assembled process pays per call for governance, without the network. `--opcodes` counts Python
opcodes per function (sys.settrace, every thread); `--cpu` gives the process's CPU time per call.
"""

from __future__ import annotations

import argparse
import asyncio
import logging.config
import os
import shutil
import sys
import tempfile
from typing import Any

from percall_instructions import callgrind  # bench/ is on the path when run as a script

WARM = 300
CONCURRENCY = 16
CONFIG = """
server: {api_keys_env: [BENCH_CLIENT_KEY]}
providers:
  sim: {kind: openai, endpoint: "http://127.0.0.1:9/v1", auth: {api_key_env: BENCH_SIM_KEY}, max_connections: 4096}
deployments:
  bench@sim: {provider: sim, model: bench-model, price: {input: 1, output: 2}}
model_groups:
  bench: {deployments: [bench@sim]}
"""
BODY = (
    b'{"model":"bench","messages":[{"role":"user","content":"Summarise the benefits of multi-cloud AI in one line."}]}'
)
ANSWER = (
    b'{"id":"chatcmpl-0123456789abcdef01234567","object":"chat.completion","created":1764763200,'
    b'"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":'
    b'"Multi-cloud AI avoids lock-in and keeps serving when one provider fails.","refusal":null},'
    b'"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":14,'
    b'"total_tokens":33}}'
)
KEY = "bench-client-key"
# The governance layers of bench/governance_bench.py, on files in a temporary directory ({tmp}).
LAYERS = {
    "storage": "storage: {{url: 'sqlite+aiosqlite:///{tmp}/gateway.db'}}\n",
    "metering": (
        "metering:\n"
        '  budgets: [{{scope: key, id: "*", amount: 1000000, period: day, mode: hard}}]\n'
        '  rate_limits: [{{scope: key, id: "*", requests_per_minute: 100000000, tokens_per_minute: 10000000000}}]\n'
    ),
    "audit": "audit: {{dir: {tmp}/audit, signing_key_file: {tmp}/audit.pem}}\n",
    # bench-only: what the audit's fsync per round costs (audit.fsync: false is for benchmarks and tests)
    "nofsync": "audit: {{dir: {tmp}/audit, signing_key_file: {tmp}/audit.pem, fsync: false}}\n",
    "nospool": "  spool: {{enabled: false}}\n",
}
CONFIGS = {
    "plain": (),
    "+storage": ("storage",),
    "+metering": ("storage", "metering"),
    "+audit": ("audit",),
    "all-sqlite": ("storage", "metering", "audit"),
    "+audit (no fsync)": ("nofsync",),
    "all-sqlite (audit not fsynced)": ("storage", "metering", "nofsync"),
    "+metering (no usage spool)": ("storage", "metering", "nospool"),
}


def config_text(name: str, tmp: str) -> str:
    """The configuration `name` (one of CONFIGS), its files under `tmp` (an audit signing key made there)."""
    layers = CONFIGS[name]
    if "audit" in layers or "nofsync" in layers:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        with open(f"{tmp}/audit.pem", "wb") as f:
            f.write(pem)
    return CONFIG + "".join(LAYERS[layer].format(tmp=tmp) for layer in layers)


class _Response:
    status = 200
    headers = {"content-type": "application/json"}
    content = ANSWER


class _Client:
    """What the attempt walk asks of an upstream client (pyqwest's) for a unary call: post, answered whole."""

    async def post(self, url, headers=None, content=None):
        return _Response()


def canned(app: Any) -> None:
    """Every model group's deployments answered by the canned client (no sockets), each keeping its gate."""
    client = _Client()
    for group in app.catalog.groups.values():
        group.clients = {name: (client, gate) for name, (_, gate) in group.clients.items()}


# --yield: each worker lets the event loop run between its calls, as a server's socket reads make it do.
# Without it no call ever waits (the canned upstream answers at once), so the loop runs no other task
# during a run: the usage writer gathers every row and writes them at shutdown, not in batches alongside.
YIELD = "--yield" in sys.argv

EMPTY = "empty"  # --config empty: the harness's own cost per call (subtract it from a configuration's)


class _EmptyApp:
    """An app that reads the body and answers 200 at once, in this harness: what the driver itself costs."""

    class catalog:  # as the gateway's, with no model group to give the canned client
        groups: dict[str, Any] = {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})


def _logging(access_log: bool) -> None:
    """As `multihome serve --log-level info` (or warning) sets it up, its lines written to /dev/null."""
    from multihome.observability.logs import serve_log_config

    sys.stderr = open(os.devnull, "w")
    logging.config.dictConfig(serve_log_config("info" if access_log else "warning"))


def chat_scope() -> dict:
    """The ASGI scope of one chat completion call with the bench key (the app's callable, no server)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {KEY}".encode()),
            (b"content-length", str(len(BODY)).encode()),
        ],
    }


async def started_app(app: Any) -> Any:
    """Run the app's lifespan start-up; -> a coroutine function that shuts it down."""
    loop = asyncio.get_running_loop()
    started, stopping = loop.create_future(), loop.create_future()
    messages = iter([{"type": "lifespan.startup"}])

    async def lifespan_receive():
        return next(messages, None) or await stopping

    async def lifespan_send(message):
        if not started.done():
            started.set_result(message)

    life = asyncio.ensure_future(app({"type": "lifespan"}, lifespan_receive, lifespan_send))
    assert (await started)["type"] == "lifespan.startup.complete"

    async def stop() -> None:
        stopping.set_result({"type": "lifespan.shutdown"})
        await life

    return stop


async def _run(calls: int, config: str = "plain") -> None:
    os.environ.setdefault("BENCH_CLIENT_KEY", KEY)
    os.environ.setdefault("BENCH_SIM_KEY", "bench-sim-key")
    from multihome.app import build_app
    from multihome.config.load import parse_config

    tmp = tempfile.mkdtemp(prefix="percall-")
    app: Any = _EmptyApp() if config == EMPTY else build_app(parse_config(config_text(config, tmp)))
    stop = await started_app(app)
    canned(app)
    scope = chat_scope()
    statuses: list[int] = []

    async def receive():
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    left = calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await app(dict(scope), receive, send)
            if YIELD:
                await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    assert statuses.count(200) == len(statuses) == calls, (len(statuses), set(statuses))
    await stop()
    shutil.rmtree(tmp, ignore_errors=True)


def child(calls: int, access_log: bool, config: str) -> None:
    import uvloop

    _logging(access_log)
    uvloop.run(_run(WARM + calls, config))


def instructions(src: str, calls: int, access_log: bool, config: str, keep: str | None = None) -> int:
    """Instructions of a child process making `calls` calls after the warm-up; `keep`: where to leave
    callgrind's output for callgrind_annotate."""
    args = ["--child", str(calls), "--config", config] + ([] if access_log else ["--no-access-log"])
    args += ["--yield"] if YIELD else []
    return callgrind(src, __file__, args, keep)


def profile(calls: int, access_log: bool, top: int, config: str) -> None:
    import cProfile
    import pstats

    import uvloop

    _logging(access_log)
    uvloop.run(_run(WARM, config))
    prof = cProfile.Profile()
    prof.enable()
    uvloop.run(_run(calls, config))
    prof.disable()
    stats = pstats.Stats(prof)
    total = sum(v[1] for v in stats.stats.values())  # type: ignore[attr-defined]
    print(f"{total / calls:.1f} Python-level function calls per request (start-up included)")
    stats.sort_stats("tottime").print_stats(top)


def _traced(calls: int, config: str) -> dict[tuple[str, int, str], int]:
    """Python opcodes executed per function (file, line, name) over a run of `calls`, every thread."""
    import collections
    import threading

    import uvloop

    counts: collections.Counter = collections.Counter()

    def tracer(frame, event, arg):
        frame.f_trace_opcodes = True
        if event == "opcode":
            co = frame.f_code
            counts[(co.co_filename, co.co_firstlineno, co.co_name)] += 1
        return tracer

    threading.settrace(tracer)
    sys.settrace(tracer)
    try:
        uvloop.run(_run(calls, config))
    finally:
        sys.settrace(None)
        threading.settrace(None)
    return counts


def opcodes(calls: int, access_log: bool, top: int, config: str) -> None:
    """Python opcodes per call by file and by function: a run of `calls` less a run of none (start-up)."""
    import collections

    import uvloop

    _logging(access_log)
    uvloop.run(_run(WARM, config))
    full, empty = _traced(calls, config), _traced(0, config)
    per = {k: (v - empty.get(k, 0)) / calls for k, v in full.items()}
    short = {k: (k[0].split("/multihome/")[-1].split("site-packages/")[-1], k[1], k[2]) for k in per}
    files: collections.Counter = collections.Counter()
    for k, v in per.items():
        files[short[k][0]] += v
    print(f"{config}: {sum(per.values()):,.0f} Python opcodes per call")
    for name, v in files.most_common(top):
        print(f"{v:9.1f}  {name}")
    print("--- by function")
    for k, v in sorted(per.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{v:9.1f}  {short[k][0]}:{short[k][1]} {short[k][2]}")


def cpu(calls: int, access_log: bool, config: str, rounds: int = 3) -> None:
    """The process's CPU time per call (every thread), a run of `calls` less a run of none, `rounds` times."""
    import resource

    import uvloop

    def used() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    _logging(access_log)
    uvloop.run(_run(WARM, config))
    out = []
    for _ in range(rounds):
        t0 = used()
        uvloop.run(_run(0, config))
        t1 = used()
        uvloop.run(_run(calls, config))
        t2 = used()
        out.append(((t2 - t1) - (t1 - t0)) / calls * 1e6)
    print(f"{config}: CPU per call " + " / ".join(f"{v:.1f}" for v in out) + " µs")


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(int(sys.argv[2]), "--no-access-log" not in sys.argv, sys.argv[sys.argv.index("--config") + 1])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--base-src", help="another tree's src/, counted in the same run")
    ap.add_argument("--src", action="append", default=[], help="count these trees' src/ instead (repeatable)")
    ap.add_argument("--no-access-log", action="store_true", help="the access log off (serve --log-level warning)")
    ap.add_argument("--profile", action="store_true", help="cProfile instead of valgrind")
    ap.add_argument("--opcodes", action="store_true", help="Python opcodes per call by file and function")
    ap.add_argument("--cpu", action="store_true", help="process CPU time per call (pin it: taskset -c 0)")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument(
        "--config",
        default="plain",
        choices=[*sorted(CONFIGS), EMPTY],
        help="the governance layers on; `empty`: an app that answers at once, the harness's own cost per call",
    )
    ap.add_argument("--yield", action="store_true", help="let the event loop run between calls (as a server does)")
    ap.add_argument("--keep", help="a directory to leave each run's callgrind output in")
    args = ap.parse_args()
    access_log = not args.no_access_log
    if args.profile:
        profile(args.calls, access_log, args.top, args.config)
        return
    if args.opcodes:
        opcodes(args.calls, access_log, args.top, args.config)
        return
    if args.cpu:
        cpu(args.calls, access_log, args.config)
        return
    trees = [("this tree", os.path.abspath("src"))] + ([("base", args.base_src)] if args.base_src else [])
    if args.src:
        trees = [(src, src) for src in args.src]
    for i, (name, src) in enumerate(trees):
        keep = (lambda n: os.path.join(args.keep, f"cg.{i}.{n}")) if args.keep else (lambda n: None)
        empty = instructions(src, 0, access_log, args.config, keep(0))
        full = instructions(src, args.calls, access_log, args.config, keep(args.calls))
        print(f"{name}: {(full - empty) / args.calls:,.0f} instructions per call ({src})", flush=True)


if __name__ == "__main__":
    main()
