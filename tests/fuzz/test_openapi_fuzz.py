"""The running gateway fuzzed from outside: schemathesis against both OpenAPI documents (the
public one at /openapi.json, the admin one at /admin/v1/openapi.json), and hostile request
bodies on every door, against the real `multihome serve` process with SQLite storage, the audit
trail, OIDC and every simulated cloud behind it (tests/e2e/fleet.py), with valid credentials.

Bounded and reproducible (fixed seeds, a fixed number of cases per operation) so it belongs in
the normal suite; bench/fuzz_long.py runs the same for as long as asked, with fresh seeds.
Asserted: no 5xx, no request without an answer within REQUEST_TIMEOUT_S (a hang), no dropped
connection, and no unexpected error in the gateway's log. Findings another branch of issue 11
fixes are tolerated by the narrow rules of known.py, and listed when the test runs with -s.
"""

from __future__ import annotations

import re

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2e.fleet import ADMIN_KEY, CHAT_GROUPS, CLIENT_KEY, EMBEDDING_GROUPS, fleet
from multihome.api.public_openapi import ROUTES

from . import known
from .schema_fuzz import Finding, Runner
from .strategies import mutated
from .test_request_properties import CHAT, CHAT_PATHS, EMBEDDINGS, EMBEDDINGS_PATHS, MESSAGES, MESSAGES_PATHS

REQUEST_TIMEOUT_S = 20.0  # the simulators answer in milliseconds; this is a hang on a busy machine
SEED = 20261202
ALIASES = {f"{r.method} {r.path}" for r in ROUTES if r.alias_of}  # same handler as the /v1 route


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with fleet(tmp_path_factory.mktemp("fuzz-fleet")) as f:
        admin = httpx.Client(base_url=f.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
        f.tenant = admin.post("/admin/v1/tenants", json={"name": "fuzzed"}).json()["id"]
        yield f


def public_document(world) -> dict:
    """The served document, with `model` narrowed to this fleet's groups so generated calls reach
    the routing, the translators and the simulators instead of stopping at 404 model_not_found."""
    doc = httpx.get(world.url + "/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for name in ("ChatCompletionRequest", "MessagesRequest", "CountTokensRequest"):
        schemas[name]["properties"]["model"] = {"type": "string", "enum": CHAT_GROUPS}
    schemas["EmbeddingsRequest"]["properties"]["model"] = {"type": "string", "enum": EMBEDDING_GROUPS}
    return doc


def admin_document(world) -> dict:
    """The served admin document, with `{tenant}` pinned to a live tenant (except on its own
    DELETE) so bodies are decoded and checked for real instead of stopping at 404."""
    doc = httpx.get(world.url + "/admin/v1/openapi.json").json()
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            if (method, path) == ("delete", "/admin/v1/tenants/{tenant}"):
                continue
            for param in operation.get("parameters", []):
                if (param["name"], param["in"]) == ("tenant", "path"):
                    param["schema"] = {"type": "string", "enum": [world.tenant]}
    return doc


def check(world, runner: Runner, log_from: int) -> None:
    report = runner.report
    print(f"\n{report.summary()}")
    for why, finding in report.tolerated:
        print(f"  tolerated ({why}): {finding.operation} {finding.outcome}")
    assert not report.findings, "\n\n".join(_describe(f) for f in report.findings[:10])
    assert_log_clean(world, log_from, report.tolerated)


def assert_log_clean(world, log_from: int, tolerated: list[tuple[str, Finding]]) -> None:
    """No 'unexpected error' in what the gateway logged during the test, except for tolerated
    calls: by request id, or (a dropped connection has none) by the exception its finding causes."""
    ids = {f.request_id for _, f in tolerated if f.request_id}
    causes = {known.LOGGED_AS[why.split(" ")[1]] for why, f in tolerated
              if f.request_id is None and why.split(" ")[1] in known.LOGGED_AS}
    bad = []
    for entry in _errors(world.log()[log_from:]):
        if not any(rid in entry for rid in ids) and not any(cause in entry for cause in causes):
            bad.append(entry)
    assert not bad, "the gateway logged unexpected errors:\n" + "\n\n".join(bad[:5])


def _errors(log: str) -> list[str]:
    """Each 'unexpected error' line with its traceback."""
    entries, current = [], None
    for line in log.splitlines():
        if "unexpected error" in line:
            current = [line]
            entries.append(current)
        elif current is not None and (line.startswith((" ", "Traceback")) or re.match(r"^\w+(\.\w+)*(Error|Exception)", line)):
            current.append(line)
        else:
            current = None
    return ["\n".join(e) for e in entries]


def test_the_public_api_never_answers_5xx_or_hangs(world):
    start = len(world.log())
    runner = Runner(public_document(world), world.url, {"Authorization": f"Bearer {CLIENT_KEY}"},
                    timeout_s=REQUEST_TIMEOUT_S, known=known.over_http)
    runner.run(examples=8, run_seed=SEED, coverage=60, skip=lambda label: label in ALIASES)
    check(world, runner, start)


def test_the_admin_api_never_answers_5xx_or_hangs(world):
    start = len(world.log())
    runner = Runner(admin_document(world), world.url, {"Authorization": f"Bearer {ADMIN_KEY}"},
                    timeout_s=REQUEST_TIMEOUT_S, known=known.over_http)
    runner.run(examples=5, run_seed=SEED, coverage=40)
    check(world, runner, start)


def _bodies(base: dict, paths: list[tuple], groups: list[str]):
    return st.sampled_from(groups).flatmap(lambda g: mutated({**base, "model": g}, paths))


_CHAT = {k: v for k, v in CHAT.items() if k != "multihome"}
_MESSAGES = {k: v for k, v in MESSAGES.items() if k != "multihome"}
_SIMPLE = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": False}
HOSTILE_CALLS = st.one_of(
    st.tuples(st.just("/v1/chat/completions"), _bodies(_CHAT, CHAT_PATHS, CHAT_GROUPS)),
    st.tuples(st.just("/v1/chat/completions"), _bodies(_SIMPLE, [("messages", 0, "content"), ("stream",), ("n",),
                                                                 ("max_tokens",), ("messages", 0)], CHAT_GROUPS)),
    st.tuples(st.just("/v1/messages"), _bodies(_MESSAGES, MESSAGES_PATHS, CHAT_GROUPS)),
    st.tuples(st.just("/v1/embeddings"), _bodies(EMBEDDINGS, EMBEDDINGS_PATHS, EMBEDDING_GROUPS)),
    st.tuples(st.just("/v1/route/explain"), _bodies(_CHAT, CHAT_PATHS, CHAT_GROUPS)),
)


def test_hostile_bodies_on_every_door_get_an_answer_that_is_not_5xx(world):
    """What the schemas cannot express: control characters in field names, bad UTF-8, nesting,
    numbers past 64 bits, JSON inside strings, in requests that are otherwise valid."""
    start = len(world.log())
    http = httpx.Client(base_url=world.url, timeout=REQUEST_TIMEOUT_S,
                        headers={"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"})
    findings: list[Finding] = []
    tolerated: list[tuple[str, Finding]] = []

    @settings(max_examples=40, derandomize=True, database=None, deadline=None)
    @given(HOSTILE_CALLS)
    def send(call) -> None:
        path, body = call
        try:
            resp = http.post(path, content=body)
            outcome, detail, rid = f"HTTP {resp.status_code}", resp.text[:300], resp.headers.get("x-request-id")
            if resp.status_code < 500:
                return
        except httpx.TimeoutException:
            outcome, detail, rid = "timeout", f"no answer within {REQUEST_TIMEOUT_S:g} s", None
        except httpx.TransportError as exc:
            outcome, detail, rid = "connection error", repr(exc)[:300], None
        finding = Finding(f"POST {path}", outcome, f"curl -X POST {world.url}{path} --data {body[:400]!r}", detail, rid)
        why = known.over_http("POST", path, body, None, outcome)
        (tolerated.append((why, finding)) if why else findings.append(finding))

    send()
    for why, finding in tolerated:
        print(f"  tolerated ({why}): {finding.operation} {finding.outcome}")
    assert not findings, "\n\n".join(_describe(f) for f in findings[:10])
    assert_log_clean(world, start, tolerated)


def _describe(finding: Finding) -> str:
    curl = re.sub(r"(Bearer )\S+", r"\1<key>", finding.curl)
    return f"{finding.operation}: {finding.outcome} ({finding.detail})\n  {curl[:1500]}"
