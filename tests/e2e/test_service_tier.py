"""`service_tier` on chat completions, end to end: the official openai SDK -> the real gateway (SQLite) ->
a simulated OpenAI upstream. Providers charge a priority call more than a default one, so a call that asks
for a tier is priced at that tier's price where the deployment declares one (`price.tiers`), and refused
with a 400 naming the field where no deployment of the model has a price for it, instead of passing
through and being booked at the default price. `auto` and `default` keep the deployment's own price."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest

from builders import api_keys, config, database, deployment, group, identity, price, simulated

from .helpers import usage_of
from .processes import Gateway
from .stores import head_database

CLIENT_KEY, ADMIN_KEY = "mh-service-tier-client", "mh-service-tier-admin"
SECRETS = {"MH_ST_CLIENT": CLIENT_KEY, "MH_ST_ADMIN": ADMIN_KEY}
USER = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def gateway(request, tmp_path_factory) -> Iterator[Gateway]:
    from .processes import Simulators

    tmp: Path = tmp_path_factory.mktemp("service-tier")
    with Simulators() as sims:
        sim = sims.start("openai", "tiers")
        cfg = config(
            server=api_keys("MH_ST_CLIENT"),
            identity=identity("MH_ST_ADMIN"),
            storage=database(head_database(request, "sqlite", tmp)),
            providers={"up": simulated("openai", sim.url)},
            deployments={
                "tiered": deployment(
                    "up", "m-tiered", price=price(1, 10, tiers={"priority": {"input": 2, "output": 20}})
                ),
                "plain": deployment("up", "m-plain", price=price(1, 10)),
            },
            model_groups={"tiered": group("tiered", retries=0), "plain": group("plain", retries=0)},
        )
        gw = Gateway(cfg, tmp, SECRETS)
        yield gw
        log = gw.stop()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture
def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


def _cost(usage, per_m_in: int, per_m_out: int) -> Decimal:
    return (Decimal(usage.prompt_tokens) * per_m_in + Decimal(usage.completion_tokens) * per_m_out) / 1_000_000


def test_a_priority_call_is_priced_at_the_tier_and_default_at_the_price(gateway, client):
    priority = client.chat.completions.create(model="tiered", messages=USER, service_tier="priority")
    row = usage_of(gateway.url, ADMIN_KEY, "tiered", 1)
    assert Decimal(row["cost"]) == _cost(priority.usage, 2, 20)
    plain = client.chat.completions.create(model="tiered", messages=USER, service_tier="default")
    auto = client.chat.completions.create(model="tiered", messages=USER, service_tier="auto")
    row = usage_of(gateway.url, ADMIN_KEY, "tiered", 3)
    assert Decimal(row["cost"]) == _cost(priority.usage, 2, 20) + _cost(plain.usage, 1, 10) + _cost(auto.usage, 1, 10)


def test_a_tier_without_a_price_is_a_400_naming_the_field(gateway, client):
    for model, tier in (("tiered", "flex"), ("plain", "priority")):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model=model, messages=USER, service_tier=tier)  # type: ignore[arg-type]
        assert info.value.param == "service_tier" and info.value.code == "unsupported_service_tier"
        assert f"'{tier}'" in info.value.message and "price.tiers" in info.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="plain", messages=USER, extra_body={"service_tier": "turbo"})
    assert bad.value.param == "service_tier"
    # A call that asks for no tier, or for the default, is served as before.
    assert client.chat.completions.create(model="plain", messages=USER, service_tier="default").choices


def test_the_responses_api_treats_the_tier_as_chat_does(gateway, client):
    admin = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    data = admin.get("/admin/v1/usage", params={"group_by": "deployment"}).json()["data"]
    now = next((r for r in data if r["deployment"] == "tiered"), {"calls": 0, "cost": "0"})
    calls, before = now["calls"], Decimal(now["cost"])
    answer = client.responses.create(model="tiered", input="Hello there", service_tier="priority")
    assert answer.usage is not None
    row = usage_of(gateway.url, ADMIN_KEY, "tiered", calls + 1)
    spent = (Decimal(answer.usage.input_tokens) * 2 + Decimal(answer.usage.output_tokens) * 20) / 1_000_000
    assert Decimal(row["cost"]) - before == spent
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="plain", input="Hello there", service_tier="priority")
    assert info.value.param == "service_tier" and info.value.code == "unsupported_service_tier"
