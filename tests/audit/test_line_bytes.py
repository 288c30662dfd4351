"""The per-call lines byte for byte: `call_started`, `call` and `policy_denial` as the front door writes
them (AuditLog.call_started and record_call, the tracker's path), for fixed inputs. The bodies are pinned
as literal bytes (what the writer wrote before its per-call path was reworked), and each whole line must
be what events.seal makes of its envelope and that body: the generic canonical encoding, not the
writer's templates."""

from __future__ import annotations

import asyncio
import os
from types import SimpleNamespace

import msgspec

from multihome.audit import AuditLog, verify_dir
from multihome.audit.events import EventCore, seal
from multihome.schema.principal import Principal

from .helpers import config

WHO = Principal(tenant="ten_a", subject="key_abc", source="api_key", team=None, key_id="key_abc")
# Escapes, non-ASCII and a `%` in the strings the caller controls least.
ODD = 'req_"\\é\u2028%s'


def _tracker(request_id: str) -> SimpleNamespace:
    """The fields of accounting.CallTracker that record_call reads."""
    return SimpleNamespace(
        principal=WHO,
        endpoint="chat",
        entitlement_id="ent_1",
        model_group="grp%d",
        policy_code=None,
        request_id=request_id,
        request_sha256="a" * 64,
        started_at=1764763200.123456,
    )


_DEP = SimpleNamespace(
    name="d@p", provider="prov", adapter=SimpleNamespace(kind="openai"), region="eu-west", data_zone=None
)
_A = SimpleNamespace
_USAGE = SimpleNamespace(cached_tokens=3, completion_tokens=14, estimated=False, prompt_tokens=19)

STARTED = (
    b'{"endpoint":"chat","key_id":"key_abc","model_group":"grp%d","principal_source":"api_key",'
    b'"request_id":"req_\\"\\\\\xc3\xa9\xe2\x80\xa8%s","request_sha256":"' + b"a" * 64 + b'","subject":"key_abc",'
    b'"team":null,"tenant":"ten_a"}'
)
CALL = (
    b'{"attempts":[{"deployment":"other","ms":1.235,"outcome":"http_503","reason":"busy"},'
    b'{"deployment":"d@p","ms":2.0,"outcome":"ok","reason":null}],"data_zone":null,"deployment":"d@p",'
    b'"endpoint":"chat","entitlement_id":"ent_1","error_code":null,"finished_at":1764763201.5,'
    b'"first_byte_ms":3.25,"key_id":"key_abc","latency_ms":12.345,"model_group":"grp%d","outcome":"ok",'
    b'"policy_code":null,"principal_source":"api_key","provider":"prov","provider_kind":"openai",'
    b'"region":"eu-west","request_id":"req_2","request_sha256":"'
    + b"a" * 64
    + b'","response_sha256":"'
    + b"b" * 64
    + b'","started_at":1764763200.123456,"status":200,"stream":true,"subject":"key_abc","team":null,'
    b'"tenant":"ten_a","tokens":{"cached":3,"completion":14,"estimated":false,"prompt":19},'
    b'"tool_calls":[{"id":"c1","name":"f"},{"id":"c2","name":"g"}]}'
)
CALL_ONE_ATTEMPT = (
    b'{"attempts":[{"deployment":"d@p","ms":7.5,"outcome":"ok","reason":null}],"data_zone":null,'
    b'"deployment":"d@p","endpoint":"chat","entitlement_id":"ent_1","error_code":"upstream_error",'
    b'"finished_at":1764763202.0,"first_byte_ms":null,"key_id":"key_abc","latency_ms":1.0,'
    b'"model_group":"grp%d","outcome":"stream_error","policy_code":null,"principal_source":"api_key",'
    b'"provider":"prov","provider_kind":"openai","region":"eu-west","request_id":"req_3","request_sha256":"'
    + b"a"
    * 64
    + b'","response_sha256":null,"started_at":1764763200.123456,"status":502,"stream":false,'
    b'"subject":"key_abc","team":null,"tenant":"ten_a","tokens":null,"tool_calls":[]}'
)
DENIAL = (
    b'{"endpoint":"chat","entitlement_id":"ent_1","error_code":"budget_exceeded","key_id":"key_abc",'
    b'"model_group":"grp%d","policy_code":null,"principal_source":"api_key","request_id":"req_4",'
    b'"request_sha256":"' + b"a" * 64 + b'","status":429,"subject":"key_abc","team":null,"tenant":"ten_a",'
    b'"time":1764763203.25}'
)


class _Line(msgspec.Struct):
    chain: str
    seq: int
    time: float
    prev: str
    kind: str
    body: msgspec.Raw


def test_the_per_call_lines_byte_for_byte(tmp_path):
    async def main() -> AuditLog:
        log = AuditLog(config(tmp_path, fsync=False))
        await log.start()
        started = log.call_started(ODD, WHO, "grp%d", "chat", "a" * 64)
        two = (_A(deployment="other", ms=1.23456, outcome="http_503", reason="busy"),)
        two += (_A(deployment="d@p", ms=2.0004999, outcome="ok", reason=None),)
        log.record_call(
            _tracker("req_2"), 1764763201.5, _DEP, True, two, 200, "ok", None, _USAGE, 12.345, 3.25,
            [("f", "c1"), ("g", "c2")], "b" * 64,
        )  # fmt: skip
        one = (_A(deployment="d@p", ms=7.5, outcome="ok", reason=None),)
        log.record_call(
            _tracker("req_3"), 1764763202.0, _DEP, False, one, 502, "stream_error", "upstream_error", None,
            1.0, None, (), None,
        )  # fmt: skip
        log.record_call(
            _tracker("req_4"), 1764763203.25, None, False, (), 429, "denied", "budget_exceeded", None,
            0.5, None, (), None,
        )  # fmt: skip
        assert await started == 1
        await log.close()
        return log

    log = asyncio.run(main())
    with open(os.path.join(log.dir, log.chain + ".jsonl"), "rb") as f:
        stored = f.read().splitlines(keepends=True)[1:]
    expected = [(b"call_started", STARTED), (b"call", CALL), (b"call", CALL_ONE_ATTEMPT), (b"policy_denial", DENIAL)]
    assert len(stored) == len(expected)
    for line, (kind, body) in zip(stored, expected):
        got = msgspec.json.decode(line, type=_Line)
        assert (got.kind.encode(), bytes(got.body)) == (kind, body)
        core = EventCore(chain=got.chain, seq=got.seq, time=got.time, prev=got.prev, kind=got.kind, body=got.body)
        assert line == seal(core)[0]
    assert verify_dir(str(tmp_path), {}).events == 4
