"""Every public route and every admin route, in process, fed a fixed list of hostile JSON values in every
field, hostile whole bodies and hostile headers: reports each answer that is a 5xx, takes longer than
`--timeout` seconds, or repeats more than 64 characters of a client value (docs/hostile-input.md); and lists
the calls that held the event loop longest (a ticker on the same loop, as bench/hostile_body_hold.py).

The app is the one of tests/stored_app.py (SQLite storage, the local KMS, a simulated OpenAI upstream): the
stateful routes work. The client calls are made with a key of a tenant holding `member` and `tenant-admin`,
the admin routes with that key too (its own tenant's paths) and once more with the bootstrap admin key.
Deterministic: no randomness, every (route, field, value) once.

    PYTHONPATH=src:tests python bench/fuzz_values.py [--only PATH-SUBSTRING] [--timeout 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import tempfile
import time
from typing import Any

from multihome.api.admin.registry import ROUTES as ADMIN_ROUTES
from stored_app import stored_app

ADMIN_KEY = "mh-bootstrap-admin-key-for-fuzz-values"
LONG = "Q" * 5000  # a long client value: an answer must not repeat 65 characters of it
LONG_RUN = "Q" * 65
PLACE = "__HOSTILE__"

# Raw JSON text of each hostile value (some are not valid JSON: that is the point).
VALUES: dict[str, bytes] = {
    "deep array": b"[" * 100_000 + b"]" * 100_000,
    "deep object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "huge int": b"1" + b"0" * 40,
    "huge negative int": b"-1" + b"0" * 40,
    "2^63": b"9223372036854775808",
    "1e400": b"1e400",
    "-1e400": b"-1e400",
    "NaN": b"NaN",
    "Infinity": b"Infinity",
    "-Infinity": b"-Infinity",
    "lone surrogate": b'"\\ud800"',
    "lone low surrogate": b'"x\\udc00y"',
    "invalid utf-8": b'"\xff\xfe\xc3("',
    "NUL and controls": b'"a\\u0000b\\u001b\\r\\n"',
    "empty string": b'""',
    "long string": json.dumps(LONG).encode(),
    "long key object": json.dumps({LONG: 1}).encode(),
    "empty object": b"{}",
    "empty array": b"[]",
    "array of long": json.dumps([LONG]).encode(),
    "null": b"null",
    "true": b"true",
    "zero": b"0",
    "negative": b"-1",
    "float": b"0.5",
    "huge float": b"1.7976931348623157e308",
    "tiny float": b"5e-324",
    "object of wrong": json.dumps({"type": LONG, "role": LONG, "id": LONG, "name": LONG}).encode(),
    "array of objects": b"[" + b",".join([b'{"type":"x"}'] * 3) + b"]",
    # A flat array of more tiny values than a body may hold (schema/json_values.py MAX_VALUES): one decoder call
    # over it held the event loop for every other caller; the holds are listed after the findings.
    "many tiny values": b"[" + b",".join([b"0"] * 500_001) + b"]",
    "many empty strings": b"[" + b",".join([b'""'] * 500_001) + b"]",
    # More values than an admin body may hold (api/admin/dispatch.py MAX_VALUES), within its 1 MiB.
    "40,000 tiny values": b"[" + b",".join([b"0"] * 40_000) + b"]",
    # A string of one long run of backslashes (the values scan took it in one piece) and one of escaped quotes.
    "backslash run": b'"' + b"\\" * 400_000 + b'"',
    "escaped quotes": b'"' + b'\\"' * 300_000 + b'"',
}
WHOLE: dict[str, bytes] = {
    **VALUES,
    "duplicate keys": b'{"model":"g","model":5,"input":"hi","input":[],"messages":[],"messages":null}',
    "truncated": b'{"model":"g","messages":[{"role":"user","content":"hi"',
    "bom": b'\xef\xbb\xbf{"model":"g"}',
    "trailing garbage": b'{"model":"g"} x',
    "two objects": b'{"model":"g"}{"model":"g"}',
    "utf-16": '{"model":"g"}'.encode("utf-16"),
    "empty": b"",
    "whitespace": b"   \n ",
}
HEADERS: dict[str, dict[str, str]] = {
    "long deployments": {"x-multihome-deployments": LONG},
    "many deployments": {"x-multihome-deployments": ",".join(["d"] * 2000)},
    "long idempotency key": {"idempotency-key": LONG},
    "long traceparent": {"traceparent": "00-" + LONG},
    "long tracestate": {"tracestate": LONG},
    "long content-type": {"content-type": "application/json; " + LONG},
    "long openai-organization": {"openai-organization": LONG},
    "long anthropic-version": {"anthropic-version": LONG},
    "long anthropic-beta": {"anthropic-beta": LONG},
    "long x-request-id": {"x-request-id": LONG},
    "long accept": {"accept": LONG},
}

CHAT = {"model": "g", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
BASES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {
        **CHAT,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "temperature": 0.5,
        "n": 1,
        "stop": ["x"],
        "logit_bias": {"1": 1},
        "response_format": {"type": "text"},
        "stream": False,
        "seed": 1,
        "user": "u",
        "metadata": {"k": "v"},
        "multihome": {"route": {"deployments": ["d"]}},
    },
    "/v1/embeddings": {"model": "g", "input": ["hi"], "dimensions": 8, "encoding_format": "float", "user": "u"},
    "/v1/messages": {
        "model": "g",
        "max_tokens": 2048,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "system": "s",
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "metadata": {"user_id": "u"},
        "stop_sequences": ["x"],
        "top_k": 3,
    },
    "/v1/messages/count_tokens": {"model": "g", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/route/explain": CHAT,
    "/v1/responses": {
        "model": "g",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
        "instructions": "be brief",
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "metadata": {"k": "v"},
        "max_output_tokens": 16,
        "text": {"format": {"type": "text"}},
        "reasoning": {"effort": "low"},
        "include": ["reasoning.encrypted_content"],
        "store": True,
    },
    "/v1/conversations": {"metadata": {"k": "v"}, "items": [{"type": "message", "role": "user", "content": "hi"}]},
    "/v1/conversations/{conversation_id}": {"metadata": {"k": "v"}},
    "/v1/conversations/{conversation_id}/items": {"items": [{"type": "message", "role": "user", "content": "hi"}]},
    "/v1/memory/records": {"agent_id": "a", "user_id": "u", "records": [{"text": "tea", "metadata": {"n": 1}}]},
    "/v1/memory/search": {"agent_id": "a", "user_id": "u", "query": "tea", "top_k": 3, "filters": {"n": {"gte": 1}}},
    "/v1/memory/namespaces": {"agent_id": "a", "user_id": "u", "default_ttl_seconds": 60},
}
GETS = [
    "/v1/models",
    "/v1/models/{long}",
    "/v1/responses/{long}",
    "/v1/responses/{long}/input_items",
    "/v1/conversations/{long}",
    "/v1/conversations/{conversation_id}/items?limit=99999999999999999999&after=" + LONG,
    "/v1/conversations/{conversation_id}/items/{long}",
    "/v1/memory/records?agent_id=" + LONG + "&user_id=%ED%A0%80%FF",
    "/v1/memory/records/{long}",
    "/v1/memory/namespaces?limit=-1",
    "/v1/responses/{response_id}/input_items?order=" + LONG + "&limit=1e400",
]


class Findings:
    def __init__(self) -> None:
        self.found: list[str] = []
        self.calls = 0
        self.statuses: dict[int, int] = {}
        self.per_route: dict[str, dict[int, int]] = {}
        self.holds: list[tuple[float, str]] = []  # (the longest event-loop hold during a call in ms, the call)
        self.gap = 0.0  # the longest gap of the loop's ticker since the current call began

    def add(self, where: str, what: str) -> None:
        self.found.append(f"{where}: {what}")
        print(f"FOUND {where}: {what}", flush=True)


def _fields(template: Any) -> list[tuple[Any, ...]]:
    """Paths (tuples of keys and indexes) of every member of `template`, to depth 4."""
    out: list[tuple[Any, ...]] = []

    def walk(value: Any, path: tuple[Any, ...]) -> None:
        if len(path) > 4:
            return
        if isinstance(value, dict):
            for k, v in value.items():
                out.append((*path, k))
                walk(v, (*path, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                out.append((*path, i))
                walk(v, (*path, i))

    walk(template, ())
    return out


def _put(template: Any, path: tuple[Any, ...]) -> bytes:
    copy = json.loads(json.dumps(template))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = PLACE
    return json.dumps(copy).encode()


async def send(
    app_client, findings: Findings, method: str, path: str, body: bytes | None, headers: dict, timeout: float, what: str
) -> int:
    findings.calls += 1
    start = time.monotonic()
    findings.gap = 0.0
    try:
        resp = await asyncio.wait_for(app_client.request(method, path, content=body, headers=headers), timeout)
    except TimeoutError:
        findings.add(f"{method} {path[:80]}", f"{what}: no answer within {timeout:g} s")
        return 0
    except Exception as exc:  # the app raised through the transport
        findings.add(f"{method} {path[:80]}", f"{what}: {type(exc).__name__}: {str(exc)[:200]}")
        return 0
    took = time.monotonic() - start
    findings.holds.append((findings.gap * 1000, f"{method} {path[:60]} {what[:80]}"))
    findings.statuses[resp.status_code] = findings.statuses.get(resp.status_code, 0) + 1
    route = findings.per_route.setdefault(f"{method} {path[:70]}", {})
    route[resp.status_code] = route.get(resp.status_code, 0) + 1
    text = resp.text
    if resp.status_code >= 500 and resp.status_code != 501:  # 501: a part this app was not configured with
        findings.add(f"{method} {path[:80]}", f"{what}: {resp.status_code} {text[:300]}")
    elif LONG_RUN in text and resp.status_code >= 400:
        findings.add(f"{method} {path[:80]}", f"{what}: echoes a long value: {text[:300]}")
    elif took > 5:
        findings.add(f"{method} {path[:80]}", f"{what}: {took:.1f} s")
    return resp.status_code


async def fuzz(only: str, timeout: float) -> Findings:
    findings = Findings()
    ticker = asyncio.create_task(_tick(findings))
    try:
        return await _fuzz(findings, only, timeout)
    finally:
        ticker.cancel()


async def _tick(findings: Findings) -> None:
    """Wakes every millisecond: the longest gap between its wake-ups is how long the loop was held."""
    last = time.perf_counter()
    while True:
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        findings.gap = max(findings.gap, now - last)
        last = now


async def _fuzz(findings: Findings, only: str, timeout: float) -> Findings:
    os.environ["MH_FUZZ_VALUES_ADMIN"] = ADMIN_KEY
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/mh.db"
        async with stored_app(url, "MH_FUZZ_VALUES_ADMIN") as (client, _app):
            admin = {"authorization": f"Bearer {ADMIN_KEY}"}
            tid = (await client.post("/admin/v1/tenants", json={"name": "fuzzed"}, headers=admin)).json()["id"]
            made = await client.post(
                f"/admin/v1/tenants/{tid}/keys", json={"name": "k", "roles": ["member", "tenant-admin"]}, headers=admin
            )
            key = made.json()["key"]
            auth = {"authorization": f"Bearer {key}", "content-type": "application/json"}
            conv = (await client.post("/v1/conversations", json={}, headers=auth)).json()["id"]
            resp = (await client.post("/v1/responses", json={"model": "g", "input": "hi"}, headers=auth)).json()["id"]
            ids = {"conversation_id": conv, "response_id": resp, "long": LONG, "tenant": tid}

            def filled(template: str) -> str:
                return re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), "x" * 80), template)

            # Public routes: each field of a valid body, then whole bodies, then headers.
            for route, base in BASES.items():
                path = filled(route)
                if only and only not in path:
                    continue
                for field_path in _fields(base):
                    text = _put(base, field_path)
                    for name, raw in VALUES.items():
                        body = text.replace(json.dumps(PLACE).encode(), raw)
                        await send(client, findings, "POST", path, body, auth, timeout, f"{field_path}={name}")
                for name, raw in WHOLE.items():
                    await send(client, findings, "POST", path, raw, auth, timeout, f"body={name}")
                good = json.dumps(base).encode()
                for name, extra in HEADERS.items():
                    await send(client, findings, "POST", path, good, {**auth, **extra}, timeout, f"header {name}")
            for get in GETS:
                path = filled(get)
                if only and only not in path:
                    continue
                await send(client, findings, "GET", path, None, auth, timeout, "get")
                await send(client, findings, "DELETE", path, None, auth, timeout, "delete")
            # Admin routes: with the tenant admin's key on its own tenant, and with the bootstrap key.
            for route in ADMIN_ROUTES:
                path = filled(route.path)
                if only and only not in path or (route.method, route.path) == ("DELETE", "/admin/v1/tenants/{tenant}"):
                    continue  # (the tenant the fuzzing key belongs to)
                fields: list[str] = []
                body_type = route.body
                if body_type is not None and hasattr(body_type, "__struct_fields__"):
                    fields = list(body_type.__struct_fields__)
                for who, hdrs in (("tenant-admin", auth), ("admin", {**admin, "content-type": "application/json"})):
                    if route.method in ("GET", "DELETE"):
                        await send(client, findings, route.method, path, None, hdrs, timeout, f"{who}")
                        continue
                    for name, raw in WHOLE.items():
                        await send(client, findings, route.method, path, raw, hdrs, timeout, f"{who} body={name}")
                    for f in fields:
                        for name, raw in VALUES.items():
                            body = b'{"' + f.encode() + b'":' + raw + b"}"
                            await send(client, findings, route.method, path, body, hdrs, timeout, f"{who} {f}={name}")
    return findings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="")
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--holds", type=int, default=15, help="how many of the longest loop holds to list")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for name in ("httpx", "multihome.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    start = time.monotonic()
    findings = asyncio.run(fuzz(args.only, args.timeout))
    took = time.monotonic() - start
    print(f"{findings.calls} calls in {took:.0f} s; statuses {dict(sorted(findings.statuses.items()))}")
    for route, statuses in sorted(findings.per_route.items()):
        print(f"  {route}: {dict(sorted(statuses.items()))}")
    print("longest event-loop holds (ms; judge on a quiet machine, not a finding):")
    for hold, call in sorted(findings.holds, reverse=True)[: args.holds]:
        print(f"  {hold:6.1f}  {call}")
    print(f"{len(findings.found)} findings")
    for f in findings.found:
        print(" ", f[:400])
    sys.exit(1 if findings.found else 0)


if __name__ == "__main__":
    main()
