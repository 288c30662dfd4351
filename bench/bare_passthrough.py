"""The bare pass-through the gateway is measured against: a plain ASGI app + aiohttp + msgspec, one
worker, uvloop + httptools (the issue names Starlette; Starlette is not a dependency of the project,
and a framework-less app is the stricter reference). It checks the bearer key, reads the model from the body, forwards the bytes
to the upstream with one pooled session (the model renamed only when the upstream's name differs) and returns its answer (streams relayed chunk by chunk):
the least an OpenAI-compatible proxy can do. Not part of the gateway.

    python bench/bare_passthrough.py --port P --upstream http://127.0.0.1:Q/v1 --model bench=bench-model
"""

from __future__ import annotations

import argparse
import os

import aiohttp
import msgspec
import uvicorn


class _Body(msgspec.Struct):
    model: str
    stream: bool = False


def app_for(upstream: str, models: dict[str, str], key: str, upstream_key: str):
    """A plain ASGI app (no framework: the least any Python proxy runs per request)."""
    session: aiohttp.ClientSession | None = None
    decode = msgspec.json.Decoder(_Body).decode
    auth = f"Bearer {key}".encode()
    json_headers = [(b"content-type", b"application/json")]

    def replace_model(raw: bytes, target: str) -> bytes:
        data = msgspec.json.decode(raw)
        data["model"] = target
        return msgspec.json.encode(data)

    async def answer(send, status: int, body: bytes, headers=json_headers) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def app(scope, receive, send) -> None:
        nonlocal session
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4096))
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if session is not None:
                        await session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] != "/v1/chat/completions" or scope["method"] != "POST":
            return await answer(send, 404, b'{"error":{"message":"not found"}}')
        if dict(scope["headers"]).get(b"authorization") != auth:
            return await answer(send, 401, b'{"error":{"message":"bad key"}}')
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        body = decode(raw)
        target = models.get(body.model)
        if target is None:
            return await answer(send, 404, b'{"error":{"message":"unknown model"}}')
        assert session is not None
        async with session.post(
            upstream + "/chat/completions",
            data=raw if target == body.model else replace_model(raw, target),
            headers={"authorization": f"Bearer {upstream_key}", "content-type": "application/json"},
        ) as resp:
            if not body.stream:
                return await answer(send, resp.status, await resp.read())
            await send(
                {
                    "type": "http.response.start",
                    "status": resp.status,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            async for chunk in resp.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--model", action="append", default=[], help="client model=upstream model")
    args = ap.parse_args()
    models = dict(m.split("=", 1) for m in args.model)
    app = app_for(args.upstream, models, os.environ["BENCH_CLIENT_KEY"], os.environ["BENCH_SIM_KEY"])
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", log_level="warning")


if __name__ == "__main__":
    main()
