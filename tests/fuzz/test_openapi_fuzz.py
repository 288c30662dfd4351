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

from e2e.fleet import ADMIN_KEY, CHAT_GROUPS, CLIENT_KEY, EMBEDDING_GROUPS, fleet
from multihome.api.public_openapi import ROUTES

from . import known
from .hostile_http import HostileBodies, stateful_calls
from .schema_fuzz import Finding, Report, Runner, admin_document, public_document, unexpected_errors

REQUEST_TIMEOUT_S = 20.0  # the simulators answer in milliseconds; this is a hang on a busy machine
SEED = 20261202
ALIASES = {f"{r.method} {r.path}" for r in ROUTES if r.alias_of}  # same handler as the /v1 route


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with fleet(tmp_path_factory.mktemp("fuzz-fleet")) as f:
        admin = httpx.Client(base_url=f.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
        f.tenant = admin.post("/admin/v1/tenants", json={"name": "fuzzed"}).json()["id"]
        yield f


def check(world, report: Report, log_from: int) -> None:
    print(f"\n{report.summary()}")
    for why, finding in report.tolerated:
        print(f"  tolerated ({why}): {finding.operation} {finding.outcome}")
    assert not report.findings, "\n\n".join(_describe(f) for f in report.findings[:10])
    logged = unexpected_errors(world.log()[log_from:], report.tolerated, known.LOGGED_AS)
    assert not logged, "the gateway logged unexpected errors:\n" + "\n\n".join(logged[:5])


def test_the_public_api_never_answers_5xx_or_hangs(world):
    start = len(world.log())
    runner = Runner(
        public_document(world.url, CHAT_GROUPS, EMBEDDING_GROUPS),
        world.url,
        {"Authorization": f"Bearer {CLIENT_KEY}"},
        timeout_s=REQUEST_TIMEOUT_S,
        known=known.over_http,
    )
    runner.run(examples=8, run_seed=SEED, coverage=60, skip=lambda label: label in ALIASES)
    check(world, runner.report, start)


def test_the_admin_api_never_answers_5xx_or_hangs(world):
    start = len(world.log())
    runner = Runner(
        admin_document(world.url, world.tenant),
        world.url,
        {"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout_s=REQUEST_TIMEOUT_S,
        known=known.over_http,
    )
    runner.run(examples=5, run_seed=SEED, coverage=40)
    check(world, runner.report, start)


def test_hostile_bodies_on_every_door_get_an_answer_that_is_not_5xx(world):
    """What the schemas cannot express (hostile_http.py), around otherwise valid requests."""
    start = len(world.log())
    runner = HostileBodies(
        world.url,
        {"authorization": f"Bearer {CLIENT_KEY}"},
        CHAT_GROUPS,
        EMBEDDING_GROUPS,
        timeout_s=REQUEST_TIMEOUT_S,
        known=known.over_http,
    )
    check(world, runner.run(examples=40, run_seed=SEED), start)


def test_hostile_bodies_on_the_stateful_routes_get_an_answer_that_is_not_5xx(world):
    """Turns (plain, streamed, background, continuing a response, in a conversation), conversations and
    their items, and memory, with live ids: the routes the first run does not reach."""
    start = len(world.log())
    client = httpx.Client(base_url=world.url, headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=30)
    conversation = client.post("/v1/conversations", json={}).json()["id"]
    response = client.post("/v1/responses", json={"model": CHAT_GROUPS[0], "input": "hi"}).json()["id"]
    runner = HostileBodies(
        world.url,
        {"authorization": f"Bearer {CLIENT_KEY}"},
        CHAT_GROUPS,
        EMBEDDING_GROUPS,
        timeout_s=REQUEST_TIMEOUT_S,
        known=known.over_http,
        strategy=stateful_calls(CHAT_GROUPS, conversation, response),
    )
    report = runner.run(examples=60, run_seed=SEED)
    check(world, report, start)
    assert sum(n for status, n in report.statuses.items() if status == 200) > 0, report.summary()  # some got through


def _describe(finding: Finding) -> str:
    curl = re.sub(r"(Bearer )\S+", r"\1<key>", finding.curl)
    return f"{finding.operation}: {finding.outcome} ({finding.detail})\n  {curl[:1500]}"
