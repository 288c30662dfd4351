"""Client-chosen names reflected into response headers never cost the client its answer, nor the
gateway its meter (issue 11, finding 1).

An unknown body field whose name holds CR/LF is reported in `x-multihome-dropped-params`. It used to
be written raw: the server refused the response head, the client got no HTTP response, the upstream
had already answered and nothing was charged. Here such calls get a normal answer with the name
percent-encoded, every one is in the usage table with its cost, and a hard budget still refuses once
spent. Both ways in: the Anthropic door (`/v1/messages`) and the OpenAI door to an Anthropic upstream.
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from builders import api_keys, config, deployment, group, identity, key_budget, price, simulated, sqlite

from .processes import Gateway, Simulator
from .stores import head_database

KEY = "mh-header-reflection-client"
ADMIN = "mh-header-reflection-admin"
ENV = {"MH_HR_CLIENT_KEY": KEY, "MH_HR_ADMIN_KEY": ADMIN, "MH_HR_ANTHROPIC_KEY": "sk-ant-header-reflection"}
HOSTILE = "x\r\nX-Injected: 1"
ENCODED = "x%0D%0AX-Injected:%201"
IN, OUT = Decimal(1000), Decimal(2000)  # per 1M tokens: a few calls use the budget up
BUDGET = Decimal("0.50")


def _config(tmp: Path, openai_url: str, anthropic_url: str) -> dict:
    """An OpenAI and an Anthropic upstream, both priced, under a hard budget on the client key."""
    return config(
        server=api_keys("MH_HR_CLIENT_KEY"),
        storage=sqlite(tmp / "mh.db"),
        identity=identity("MH_HR_ADMIN_KEY"),
        metering={"budgets": [key_budget("MH_HR_CLIENT_KEY", BUDGET)]},
        providers={
            "oa": simulated("openai", openai_url),
            "an": simulated("anthropic", anthropic_url, key_env="MH_HR_ANTHROPIC_KEY"),
        },
        deployments={
            "priced": deployment("oa", "priced", price=price(IN, OUT)),
            "claude": deployment("an", "claude-sonnet-4-5", price=price(IN, OUT)),
        },
        model_groups={"priced": group("priced", retries=0), "claude": group("claude", retries=0)},
    )


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reflection")
    head_database(request, "sqlite", tmp, "mh.db")  # the config's file, at the head revision
    oa, an = (
        Simulator("openai", "hr-oa"),
        Simulator("anthropic", "hr-an", "--api-key-env", "MH_HR_ANTHROPIC_KEY", env=ENV),
    )
    try:
        gw = Gateway(_config(tmp, oa.url, an.url), tmp, ENV)
        try:
            yield gw, oa, an
        finally:
            gw.stop()
    finally:
        oa.stop()
        an.stop()


def _usage(gw) -> dict:
    """The usage table's totals for the whole organisation (the admin API flushes this replica first)."""
    resp = httpx.get(
        gw.url + "/admin/v1/usage?group_by=tenant", headers={"authorization": f"Bearer {ADMIN}"}, timeout=10
    )
    assert resp.status_code == 200, resp.text
    rows = resp.json()["data"]
    return {"calls": sum(r["calls"] for r in rows), "cost": sum((Decimal(r["cost"]) for r in rows), Decimal(0))}


def _wait_usage(gw, calls: int) -> dict:
    deadline = time.monotonic() + 10
    while True:
        usage = _usage(gw)
        if usage["calls"] >= calls or time.monotonic() > deadline:
            return usage
        time.sleep(0.05)


def test_hostile_field_names_get_an_answer_and_are_charged_until_the_budget_refuses(world):
    gw, oa, an = world
    claude = anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0, timeout=10)
    chat = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0, timeout=10)
    answered, refused = 0, None
    for i in range(40):
        try:
            if i % 2 == 0:  # the Anthropic door reports the unknown field itself
                raw = claude.messages.with_raw_response.create(
                    model="priced",
                    max_tokens=20,
                    messages=[{"role": "user", "content": "hello"}],
                    extra_body={HOSTILE: 1},
                )
                assert raw.parse().content[0].text
            else:  # the OpenAI door: the Anthropic upstream's adapter drops it
                raw = chat.chat.completions.with_raw_response.create(
                    model="claude",
                    max_tokens=20,
                    messages=[{"role": "user", "content": "hello"}],
                    extra_body={HOSTILE: 1},
                )
                assert raw.parse().choices[0].message.content
        except (anthropic.RateLimitError, openai.RateLimitError) as exc:
            refused = exc
            break
        answered += 1
        assert raw.headers["x-multihome-dropped-params"] == ENCODED
        assert "x-injected" not in raw.headers
    assert refused is not None, "the hard budget never refused a call"
    assert "budget" in str(refused).lower(), refused
    assert answered >= 2, f"both doors answered at least once; refused: {refused}"
    upstream = oa.stats()["requests"] + an.stats()["requests"]
    assert upstream == answered  # every call that reached an upstream was answered ...
    usage = _wait_usage(gw, answered)
    assert usage["calls"] >= answered  # ... and is in the usage table (the refused one too, uncharged)
    assert BUDGET / 2 < usage["cost"] <= BUDGET, usage
