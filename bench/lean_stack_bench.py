"""What a leaner server/client stack would buy the plain path, per call: bench/bare_passthrough.py's work
(check the key, decode the model, forward the bytes upstream, return the answer) under other HTTP servers
(uvicorn, granian's ASGI, granian's RSGI) and upstream clients (aiohttp, httpx, aiosonic, pyreqwest, rnet,
niquests, and optionally a yardstick client given by --raw-client). Not part of `make bench`.

Setup (a scratch venv; the project's venv is left alone), then run from the repo with the project's venv:

    python3 -m venv /tmp/lean-stack/venv && /tmp/lean-stack/venv/bin/pip install granian uvicorn uvloop \
        httptools aiohttp msgspec httpx aiosonic pyreqwest rnet niquests
    PYTHONPATH=src python bench/lean_stack_bench.py --venv /tmp/lean-stack/venv \
        --combos uvicorn/aiohttp,granian/aiohttp,rsgi/aiohttp [--callgrind] [--wrk --rounds 3]

--callgrind: the server process under valgrind (every thread), --warm calls, counters zeroed, --calls calls
at --concurrency 16 from an aiohttp client, a dump: whole-process instructions per call.
--wrk: req/s at c=64 (server on core 0; simulator and wrk on core 1), combinations interleaved --rounds
times; medians and spread. Non-streaming calls only (the alternatives' streaming is not wired here).
Loopback only; every load loop bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVERS = ("uvicorn", "granian", "rsgi")
CLIENTS = ("aiohttp", "httpx", "aiosonic", "pyreqwest", "rnet", "niquests", "raw")


# ---- the server side (runs in the scratch venv: `--serve`) ----


def upstream_client(kind: str, upstream: str, raw_client: str | None):
    """An async `post(body: bytes) -> (status, bytes)` to upstream/chat/completions, pooled, and its closer."""
    url = upstream + "/chat/completions"
    key = os.environ["BENCH_SIM_KEY"]
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    if kind == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4096))

        async def post(body: bytes):
            async with session.post(url, data=body, headers=headers) as resp:
                return resp.status, await resp.read()

        return post, session.close
    if kind == "httpx":
        import httpx

        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=4096, max_keepalive_connections=4096))

        async def post(body: bytes):
            resp = await client.post(url, content=body, headers=headers)
            return resp.status_code, resp.content

        return post, client.aclose
    if kind == "aiosonic":
        import aiosonic
        from aiosonic.pools import PoolConfig

        client = aiosonic.HTTPClient(
            aiosonic.TCPConnector(pool_configs={":default": PoolConfig(size=4096, max_conn_requests=None)})
        )

        async def post(body: bytes):
            resp = await client.post(url, data=body, headers=headers)
            return resp.status_code, await resp.content()

        async def close():
            await client.connector.cleanup()

        return post, close
    if kind == "pyreqwest":
        from pyreqwest.client import ClientBuilder

        client = ClientBuilder().max_connections(4096).build()

        async def post(body: bytes):
            resp = await client.post(url).headers(headers).body_bytes(body).build().send()
            return resp.status, bytes(await resp.bytes())

        async def close():
            await client.close()

        return post, close
    if kind == "rnet":
        import rnet

        client = rnet.Client(http1_only=True, pool_max_idle_per_host=4096)

        async def post(body: bytes):
            resp = await client.post(url, body=body, headers=headers)
            return resp.status, await resp.bytes()

        async def close():
            return None

        return post, close
    if kind == "niquests":
        import niquests

        session = niquests.AsyncSession(pool_connections=4, pool_maxsize=4096, disable_http2=True, disable_http3=True)

        async def post(body: bytes):
            resp = await session.post(url, data=body, headers=headers)
            return resp.status_code, resp.content

        return post, session.close
    if kind == "raw":
        sys.path.insert(0, str(Path(raw_client).parent))
        from urllib.parse import urlsplit

        rawclient = __import__(Path(raw_client).stem)
        parts = urlsplit(url)
        client = rawclient.RawClient(parts.hostname, parts.port)
        head = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers.items())
        path = parts.path.encode()

        async def post(body: bytes):
            return await client.post(path, body, head)

        return post, client.close
    raise SystemExit(f"unknown client {kind}")


def make_app(server: str, client: str, upstream: str, models: dict[str, str], raw_client: str | None):
    """bench/bare_passthrough.py's non-streaming work, as an ASGI or an RSGI app."""
    import msgspec

    class Body(msgspec.Struct):
        model: str
        stream: bool = False

    decode = msgspec.json.Decoder(Body).decode
    auth = f"Bearer {os.environ['BENCH_CLIENT_KEY']}"
    auth_b = auth.encode()
    state: dict = {}

    def forward_body(raw: bytes, body) -> bytes | None:
        target = models.get(body.model)
        if target is None:
            return None
        if target == body.model:
            return raw
        data = msgspec.json.decode(raw)
        data["model"] = target
        return msgspec.json.encode(data)

    async def start():
        state["post"], state["close"] = upstream_client(client, upstream, raw_client)

    if server == "rsgi":
        json_h = [("content-type", "application/json")]

        class App:
            def __rsgi_init__(self, loop) -> None:
                return None  # the client is made on the first call instead, inside the running loop

            async def __rsgi__(self, scope, proto):
                if "post" not in state:
                    await start()
                if scope.path != "/v1/chat/completions" or scope.method != "POST":
                    return proto.response_bytes(404, json_h, b'{"error":{"message":"not found"}}')
                if scope.headers.get("authorization") != auth:
                    return proto.response_bytes(401, json_h, b'{"error":{"message":"bad key"}}')
                raw = await proto()
                out = forward_body(raw, decode(raw))
                if out is None:
                    return proto.response_bytes(404, json_h, b'{"error":{"message":"unknown model"}}')
                status, data = await state["post"](out)
                proto.response_bytes(status, json_h, data)

        return App()

    json_headers = [(b"content-type", b"application/json")]

    async def answer(send, status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": json_headers})
        await send({"type": "http.response.body", "body": body})

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await start()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await state["close"]()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] != "/v1/chat/completions" or scope["method"] != "POST":
            return await answer(send, 404, b'{"error":{"message":"not found"}}')
        if dict(scope["headers"]).get(b"authorization") != auth_b:
            return await answer(send, 401, b'{"error":{"message":"bad key"}}')
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        out = forward_body(raw, decode(raw))
        if out is None:
            return await answer(send, 404, b'{"error":{"message":"unknown model"}}')
        status, data = await state["post"](out)
        await answer(send, status, data)

    return app


def serve(args) -> None:
    models = dict(m.split("=", 1) for m in args.model)
    app = make_app(args.server, args.client, args.upstream, models, args.raw_client)
    if args.server == "uvicorn":
        import uvicorn

        uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", log_level="warning")
        return
    # granian embedded in this process (one Rust runtime thread, the app on this thread's uvloop), so that
    # valgrind counts one process; `granian --workers 1` runs the same worker in a child process.
    import signal

    import uvloop
    from granian.constants import Interfaces
    from granian.server.embed import Server

    async def run() -> None:
        srv = Server(
            app,
            address="127.0.0.1",
            port=args.port,
            interface=Interfaces.ASGI if args.server == "granian" else Interfaces.RSGI,
            runtime_threads=1,
            websockets=False,
            log_enabled=False,
        )
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, srv.stop)
        await srv.serve()

    uvloop.run(run())


# ---- the driver (runs in the project's venv) ----


def combos(text: str) -> list[tuple[str, str]]:
    out = []
    for item in text.split(","):
        server, client = item.split("/")
        assert server in SERVERS and client in CLIENTS, item
        out.append((server, client))
    return out


def start_server(args, server: str, client: str, sim_url: str, port: int, under: list[str], log: Path):
    from gateway_bench import ENV

    cmd = [*under, str(Path(args.venv) / "bin/python"), __file__, "--serve", "--server", server, "--client", client]
    cmd += ["--port", str(port), "--upstream", sim_url + "/v1", "--model", "bench=bench-model"]
    if args.raw_client:
        cmd += ["--raw-client", args.raw_client]
    with open(log, "w") as f:
        return subprocess.Popen(cmd, env=ENV, stdout=f, stderr=subprocess.STDOUT)


def threads_of(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return -1


def callgrind(args, server: str, client: str, sim_url: str, tmp: Path, port: int) -> dict:
    from governance_bench import stop, wait_ready
    from governance_callgrind import calls, control, dump_now, program_total

    name = f"{server}-{client}"
    vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/callgrind.{name}.%p", "--dump-instr=no"]
    proc = start_server(args, server, client, sim_url, port, vg, tmp / f"{name}.vg.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}/", proc, seconds=600)
        url = f"http://127.0.0.1:{port}"
        asyncio.run(calls(url, args.warm, args.concurrency))
        time.sleep(1)
        control(proc.pid, "-z")
        ok = asyncio.run(calls(url, args.calls, args.concurrency))
        dump = dump_now(proc.pid, tmp, name)
        threads = threads_of(proc.pid)
    finally:
        stop(proc)
    return {"total": program_total(dump) / args.calls, "ok": ok, "threads": threads, "dump": dump}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve", action="store_true", help="(internal) run one server")
    ap.add_argument("--server", choices=SERVERS, default="uvicorn")
    ap.add_argument("--client", choices=CLIENTS, default="aiohttp")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--upstream", default="")
    ap.add_argument("--model", action="append", default=[])
    ap.add_argument("--raw-client", help="a .py file defining RawClient(host, port) (the yardstick client)")
    ap.add_argument("--venv", default="/tmp/lean-stack/venv")
    ap.add_argument("--combos", default="uvicorn/aiohttp,granian/aiohttp,rsgi/aiohttp")
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--warm", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--wrk", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    args = ap.parse_args()
    if args.serve:
        return serve(args)

    sys.path.insert(0, str(HERE))
    import tempfile

    from gateway_bench import cpu_per_call, start_sim
    from governance_bench import stop, wait_ready

    tmp = Path(tempfile.mkdtemp(prefix="lean-stack-"))
    todo = combos(args.combos)
    sim, sim_url = start_sim()
    try:
        if args.callgrind:
            for i, (server, client) in enumerate(todo):
                r = callgrind(args, server, client, sim_url, tmp, 4800 + i)
                print(
                    f"callgrind {server}/{client}: {r['total']:,.0f} instructions per call "
                    f"({r['ok']} of {args.calls} answered 200; {r['threads']} threads; {r['dump']})",
                    flush=True,
                )
        if args.wrk:
            rps: dict[tuple[str, str], list[float]] = {c: [] for c in todo}
            cpu: dict[tuple[str, str], list[float]] = {c: [] for c in todo}
            for rnd in range(args.rounds):
                for i, (server, client) in enumerate(todo):
                    port = 4900 + i
                    # pinned from the start: a Rust runtime's threads inherit core 0 (pinning the pid later misses them)
                    pin = ["taskset", "-c", "0"]
                    proc = start_server(args, server, client, sim_url, port, pin, tmp / f"{server}-{client}.log")
                    try:
                        wait_ready(f"http://127.0.0.1:{port}/", proc, seconds=60)
                        url = f"http://127.0.0.1:{port}"
                        us, r = cpu_per_call(url, proc.pid, sim.pid, seconds=args.seconds, tmp=tmp)
                        threads = threads_of(proc.pid)
                    finally:
                        stop(proc)
                    rps[(server, client)].append(r["rps"])
                    cpu[(server, client)].append(us)
                    print(
                        f"round {rnd + 1} {server}/{client}: {r['rps']:,.0f} req/s, {us:.0f} us CPU per call "
                        f"(errors {r['errors']}, "
                        f"{threads} threads, load {os.getloadavg()[0]:.1f})",
                        flush=True,
                    )
            print(
                "\n| server/client | req/s median | spread (min-max) | server CPU per call, median |\n|---|---|---|---|"
            )
            for (server, client), v in rps.items():
                c = statistics.median(cpu[(server, client)])
                print(f"| {server}/{client} | {statistics.median(v):,.0f} | {min(v):,.0f}-{max(v):,.0f} | {c:.0f} us |")
    finally:
        stop(sim)


if __name__ == "__main__":
    main()
