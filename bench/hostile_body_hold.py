"""How long one hostile 20 MiB body holds the event loop, in process (docs/hostile-input.md).

The app is the gateway's own (one deployment nothing listens on: a body that is accepted fails over to a
503, after its parse, planning and estimate, two attempts; a SQLite store and the bootstrap admin key for the
admin bodies); the body goes in through httpx's ASGI transport, in 64 KiB pieces as a server reads it. A ticker on
the same loop sleeps 1 ms at a time: the longest gap between its wake-ups is how long the loop was held,
which every other client's call would have waited. Each body is sent `--runs` times; the longest gap of each
run is printed, with the answer's status and code.

    PYTHONPATH=src:tests python bench/hostile_body_hold.py [--runs 5]
    PYTHONPATH=/other/tree/src:tests python bench/hostile_body_hold.py   # the same on another tree

Bodies: ~700,000 tiny chat content parts, the same as Responses input parts, flat arrays of millions of tiny
values (embeddings token ids, chat `stop`, `logit_bias`, a tool's `enum`, Responses `include`), the same to
route explain, and (for scale, taken) one 19 MiB string, OpenAI's largest embeddings batch, 19 MiB of JSON
inside a string (29 MiB escaped) and a 29 MiB string of backslashes; and the worst admin bodies of at most
1 MiB (millions of values, deep nesting, strings of escapes, a policy near the largest taken). `--only SUBSTRING` picks bodies by name. Judge by the gaps, run on a quiet machine; nothing
here is a pass or a fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator

import httpx

from builders import identity, open_door, single, sqlite, typed
from multihome.app import build_app

PARTS = 700_000
ADMIN_ENV, ADMIN_KEY = "MH_HOSTILE_BODY_HOLD_ADMIN", "mh-bootstrap-admin-key-for-hostile-body-hold"
MIB = 1 << 20


def bodies() -> dict[str, tuple[str, bytes]]:
    message = [{"role": "user", "content": "hi"}]
    chat_parts = {"model": "g", "messages": [{"role": "user", "content": [{"type": "text", "text": ""}] * PARTS}]}
    responses_parts = {
        "model": "g",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": ""}] * PARTS}],
    }
    string = {"model": "g", "messages": [{"role": "user", "content": "x" * (19 * 1024 * 1024)}]}
    enum = {"type": "object", "properties": {"p": {"enum": [0] * 9_000_000}}}
    # JSON inside a string (a tool's output): every quote escaped, the slowest text for a decoder and the scan.
    escaped = json.dumps([{"a": [1, 2], "b": 'say "hi"'}] * 700_000)
    return {
        "chat: 700k tiny parts": ("/v1/chat/completions", json.dumps(chat_parts).encode()),
        "responses: 700k tiny parts": ("/v1/responses", json.dumps(responses_parts).encode()),
        "chat: one 19 MiB string": ("/v1/chat/completions", json.dumps(string).encode()),
        # Flat arrays of tiny values (docs/hostile-input.md): one decoder call held the loop for each.
        "embeddings: 9M token ids": (
            "/v1/embeddings",
            b'{"model":"g","input":[' + b",".join([b"1"] * 9_000_000) + b"]}",
        ),
        "chat: 6M empty stop strings": (
            "/v1/chat/completions",
            json.dumps({"model": "g", "messages": message, "stop": [""] * 6_000_000}).encode(),
        ),
        "chat: 2M logit_bias ids": (
            "/v1/chat/completions",
            json.dumps(
                {"model": "g", "messages": message, "logit_bias": {str(i): 1 for i in range(2_000_000)}}
            ).encode(),
        ),
        "chat: tool enum of 9M": (
            "/v1/chat/completions",
            json.dumps(
                {
                    "model": "g",
                    "messages": message,
                    "tools": [{"type": "function", "function": {"name": "f", "parameters": enum}}],
                }
            ).encode(),
        ),
        "responses: 6M include": (
            "/v1/responses",
            json.dumps({"model": "g", "input": "hi", "include": [""] * 6_000_000}).encode(),
        ),
        "explain: 700k tiny parts": ("/v1/route/explain", json.dumps(chat_parts).encode()),
        "explain: 9M token ids": (
            "/v1/route/explain",
            b'{"model":"g","input":[' + b",".join([b"1"] * 9_000_000) + b"]}",
        ),
        # Taken (for scale): OpenAI's largest embeddings batch, and a body of JSON inside a string.
        "embeddings: 2048 x 146 token ids": (
            "/v1/embeddings",
            json.dumps({"model": "g", "input": [[100_000] * 146] * 2048}).encode(),
        ),
        # One string of 29 MiB of backslashes (taken): the values scan took it in one piece, not in 64 KiB slices.
        "chat: 29 MiB of backslashes": (
            "/v1/chat/completions",
            b'{"model":"g","messages":[{"role":"user","content":"' + b"\\\\" * (29 * MIB // 2 - 32) + b'"}]}',
        ),
        "chat: 29 MiB of escaped JSON (19 MiB unescaped; taken, tried twice)": (
            "/v1/chat/completions",
            json.dumps({"model": "g", "messages": [{"role": "user", "content": escaped}]}).encode(),
        ),
        **admin_bodies(),
    }


def admin_bodies() -> dict[str, tuple[str, bytes]]:
    """The worst admin bodies of at most 1 MiB (the admin API's bound): as many values as one may hold, nesting
    as deep, strings of escapes. `metadata` is the one field of any shape (a tenant's, a key's)."""
    room = MIB - 64

    def metadata(inner: bytes) -> bytes:
        return b'{"name":"t","metadata":{"m":' + inner + b"}}"

    def flat(value: bytes) -> bytes:
        return b"[" + b",".join([value] * ((room - 40) // (len(value) + 1))) + b"]"

    def policy() -> bytes:
        names = ("providers", "regions", "model_groups")
        rules = [{"effect": "deny", **{n: [f"{n[0]}{i}-{j}" for j in range(60)] for n in names}} for i in range(100)]
        return json.dumps({"scope": "tenant", "rules": rules}).encode()

    keys = b"{" + b",".join(b'"%x":0' % i for i in range(room // 10)) + b"}"  # ~105,000 distinct keys
    return {
        "admin: tenant metadata of 1 MiB of ints": ("/admin/v1/tenants", metadata(flat(b"0"))),
        "admin: tenant metadata of empty strings": ("/admin/v1/tenants", metadata(flat(b'""'))),
        "admin: tenant metadata of empty objects": ("/admin/v1/tenants", metadata(flat(b"{}"))),
        "admin: tenant metadata of 105k keys": ("/admin/v1/tenants", metadata(keys)),
        "admin: tenant metadata of floats": ("/admin/v1/tenants", metadata(flat(b"1e-300"))),
        "admin: tenant metadata nested 500k deep": (
            "/admin/v1/tenants",
            metadata(b"[" * (room // 2) + b"]" * (room // 2)),
        ),
        "admin: tenant metadata of objects nested": (
            "/admin/v1/tenants",
            metadata(b'{"a":' * (room // 6) + b"1" + b"}" * (room // 6)),
        ),
        "admin: tenant name of escaped quotes": ("/admin/v1/tenants", b'{"name":"' + b'\\"' * (room // 3) + b'"}'),
        "admin: tenant name of backslashes": ("/admin/v1/tenants", b'{"name":"' + b"\\\\" * (room // 2) + b'"}'),
        "admin: tenant name of \\u escapes": ("/admin/v1/tenants", b'{"name":"' + b"\\u00e9" * (room // 6) + b'"}'),
        "admin: policy of 100k rules": (
            "/admin/v1/tenants/{tenant}/policies",
            b'{"scope":"tenant","rules":' + flat(b'{"effect":"deny"}') + b"}",
        ),
        "admin: key roles of empty strings": (
            "/admin/v1/tenants/{tenant}/keys",
            b'{"name":"k","roles":' + flat(b'""') + b"}",
        ),
        # At the admin API's cap of values (api/admin/dispatch.py MAX_VALUES): what a handler may be given.
        "admin: key roles of 32,000 empty strings": (
            "/admin/v1/tenants/{tenant}/keys",
            b'{"name":"k","roles":[' + b",".join([b'""'] * 32_000) + b"]}",
        ),
        "admin: policy of 100 rules of 3 x 60 entries (taken)": ("/admin/v1/tenants/{tenant}/policies", policy()),
    }


async def _pieces(body: bytes) -> AsyncIterator[bytes]:
    """The body as a server reads it off a socket: in 64 KiB pieces, each its own ASGI message."""
    for start in range(0, len(body), 64 * 1024):
        yield body[start : start + 64 * 1024]


async def held(client: httpx.AsyncClient, path: str, body: bytes) -> tuple[float, int, str]:
    """(the longest gap of the ticker while the request ran, in ms; its status; its error code)."""
    longest = 0.0
    done = False

    async def tick() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    headers = {"content-type": "application/json", "authorization": f"Bearer {ADMIN_KEY}"}
    answer = await client.post(path, content=_pieces(body) if len(body) > 64 * 1024 else body, headers=headers)
    done = True
    await ticker
    code = ""
    if answer.status_code >= 400:
        code = str((answer.json().get("error") or {}).get("code"))
    return longest * 1000, answer.status_code, code


async def main(runs: int, only: str) -> None:
    os.environ[ADMIN_ENV] = ADMIN_KEY
    with tempfile.TemporaryDirectory() as tmp:
        cfg = single(
            server=open_door(max_body_bytes=30 * MIB), storage=sqlite(f"{tmp}/mh.db"), identity=identity(ADMIN_ENV)
        )
        await measure(build_app(typed(cfg)), runs, only)


async def measure(gateway, runs: int, only: str) -> None:
    for service in gateway.services:
        await service.start()
    transport = httpx.ASGITransport(app=gateway)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=120) as client:
            tenant = ""
            for name, (path, body) in bodies().items():
                if only not in name:
                    continue
                if "{tenant}" in path and not tenant:
                    made = await client.post("/admin/v1/tenants", json={"name": "held"}, headers=_admin())
                    tenant = made.json()["id"]
                path = path.replace("{tenant}", tenant)
                gaps = []
                for _ in range(runs):
                    gap, status, code = await held(client, path, body)
                    gaps.append(gap)
                shown = ", ".join(f"{g:.0f}" for g in gaps)
                print(f"{name} ({len(body) / 2**20:.1f} MiB): {status} {code}; longest loop hold per run, ms: {shown}")
    finally:
        for service in reversed(gateway.services):
            await service.close()


def _admin() -> dict[str, str]:
    return {"authorization": f"Bearer {ADMIN_KEY}"}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.only))
