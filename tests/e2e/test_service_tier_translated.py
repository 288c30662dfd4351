"""`service_tier` on a deployment whose upstream takes none (Claude, Gemini: the translation drops the field),
end to end: the official openai SDK -> the real gateway (SQLite) -> the anthropic and gemini simulators.

Such a call runs at the provider's standard tier whatever was asked. OpenAI serves a `priority` call it cannot
give priority at the default tier and says so in the answer's `service_tier`; the gateway does the same: the
call is served (not refused for want of a `price.tiers.priority` it could never honour), the answer reports
`default`, and the usage row costs the deployment's own price. A `flex` call (cheaper than the default) is
not served at the default tier's higher price: still the 400 `unsupported_service_tier`."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from builders import api_keys, config, database, deployment, group, identity, price, simulated

from .helpers import usage_of
from .processes import Gateway, Simulators
from .stores import head_database

CLIENT_KEY, ADMIN_KEY = "mh-tier-translated-client", "mh-tier-translated-admin"
SECRETS = {
    "MH_TT_CLIENT": CLIENT_KEY,
    "MH_TT_ADMIN": ADMIN_KEY,
    "MH_TT_ANTHROPIC_KEY": "sk-ant-tier-translated",
    "MH_TT_GEMINI_KEY": "gemini-tier-translated",
}
USER = [{"role": "user", "content": "Hello there"}]
MODELS = {"claude": "claude-sonnet-4-5", "gemini": "gemini-2.5-flash"}


@pytest.fixture(scope="module")
def gateway(request, tmp_path_factory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("service-tier-translated")
    with Simulators() as sims:
        an = sims.start("anthropic", "tier-an", key_env="MH_TT_ANTHROPIC_KEY", env=SECRETS)
        gem = sims.start("gemini", "tier-gem", key_env="MH_TT_GEMINI_KEY", env=SECRETS)
        cfg = config(
            server=api_keys("MH_TT_CLIENT"),
            identity=identity("MH_TT_ADMIN"),
            storage=database(head_database(request, "sqlite", tmp)),
            providers={
                "an": simulated("anthropic", an.url, key_env="MH_TT_ANTHROPIC_KEY"),
                "gem": simulated("gemini", gem.url, key_env="MH_TT_GEMINI_KEY"),
            },
            deployments={
                "claude": deployment("an", MODELS["claude"], price=price(1, 10)),
                "gemini": deployment("gem", MODELS["gemini"], price=price(1, 10)),
            },
            model_groups={"claude": group("claude", retries=0), "gemini": group("gemini", retries=0)},
        )
        gw = Gateway(cfg, tmp, SECRETS)
        yield gw
        log = gw.stop()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture
def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


@pytest.mark.parametrize("model", ["claude", "gemini"])
def test_a_priority_call_runs_at_the_standard_tier_says_so_and_costs_the_price(gateway, client, model):
    raw = client.chat.completions.with_raw_response.create(model=model, messages=USER, service_tier="priority")
    reply = raw.parse()
    assert reply.choices[0].message.content
    assert reply.service_tier == "default"  # the tier it was processed at, as OpenAI reports it
    assert "service_tier" in raw.headers["x-multihome-dropped-params"]
    assert reply.usage is not None
    row = usage_of(gateway.url, ADMIN_KEY, model, 1)
    spent = (Decimal(reply.usage.prompt_tokens) * 1 + Decimal(reply.usage.completion_tokens) * 10) / 1_000_000
    assert Decimal(row["cost"]) == spent
    # Streamed: every chunk says so too.
    chunks = list(client.chat.completions.create(model=model, messages=USER, service_tier="priority", stream=True))
    assert chunks and {c.service_tier for c in chunks} == {"default"}


def test_a_flex_call_is_not_served_at_the_dearer_standard_tier(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="claude", messages=USER, service_tier="flex")
    assert info.value.param == "service_tier" and info.value.code == "unsupported_service_tier"


@pytest.mark.parametrize("stream", [False, True])
def test_the_responses_api_reports_the_tier_used(client, stream):
    if stream:
        events = list(client.responses.create(model="claude", input="Hello", service_tier="priority", stream=True))
        created, done = events[0], events[-1]
        assert created.type == "response.created" and done.type == "response.completed"
        assert created.response.service_tier == "priority"  # what was asked, until the answer says
        answer = done.response
    else:
        answer = client.responses.create(model="claude", input="Hello", service_tier="priority")
    assert answer.status == "completed" and answer.service_tier == "default"
