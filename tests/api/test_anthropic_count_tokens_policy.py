"""`POST /v1/messages/count_tokens` is decided by policy as `/v1/messages` is (docs/anthropic-front-door.md
"Counting tokens"): a group a policy denies, a model outside the key's `scopes_models` and an unknown model are
refused with the status, code and message the message itself gets, in Anthropic's envelope, before any provider
is called. An auditor-only key, which calls no model, still counts. The app in process, on SQLite and PostgreSQL,
through the official anthropic SDK."""

from __future__ import annotations

import time

import anthropic
import anyio
import httpx2
import pytest

from admin_http import ok
from stored_app import STORES, StoredWorld, store_url, stored_world

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-count-policy"
ASK = [{"role": "user", "content": "how many tokens is this?"}]


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_COUNT_POLICY", ADMIN_KEY)


@pytest.fixture(params=STORES)
async def world(request, tmp_path):
    """(the StoredWorld with groups `g` and `other`, its simulated upstream)."""
    url = store_url(request, tmp_path)
    async with stored_world(url, "MH_TEST_COUNT_POLICY", ADMIN_KEY, groups={"other": "m-other"}) as (w, sim, _):
        yield w, sim


def _claude(w: StoredWorld, key: str) -> anthropic.AsyncAnthropic:
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=w.app), base_url="http://gw")
    return anthropic.AsyncAnthropic(api_key=key, base_url="http://gw", max_retries=0, http_client=http)


async def _key(w: StoredWorld, tenant: str, **fields) -> str:
    body = {"name": "k2", "roles": ["member"], **fields}
    return (await ok(await w.call("POST", f"/admin/v1/tenants/{tenant}/keys", json=body), 201))["key"]


async def _same_refusal(claude: anthropic.AsyncAnthropic, model: str, status: int) -> dict:
    """The count's refusal, checked to be the message's own (status, Anthropic error type and message)."""
    with pytest.raises(anthropic.APIStatusError) as counted:
        await claude.messages.count_tokens(model=model, messages=ASK)
    with pytest.raises(anthropic.APIStatusError) as created:
        await claude.messages.create(model=model, max_tokens=16, messages=ASK)
    assert counted.value.status_code == created.value.status_code == status, counted.value.body
    assert counted.value.body["type"] == "error", counted.value.body
    assert counted.value.body["error"] == created.value.body["error"]
    return counted.value.body["error"]


async def test_a_group_policy_denies_is_refused_as_a_message_is(world):
    w, sim = world
    tenant, key = await w.tenant("acme")
    claude = _claude(w, key)
    assert (await claude.messages.count_tokens(model="other", messages=ASK)).input_tokens > 0
    policy = {"scope": "tenant", "rules": [{"effect": "deny", "model_groups": ["other"]}], "description": "no other"}
    await ok(await w.call("POST", f"/admin/v1/tenants/{tenant}/policies", json=policy), 201)
    deadline = time.monotonic() + 15
    while True:  # the app picks the policy up within storage.refresh_s
        try:
            await claude.messages.count_tokens(model="other", messages=ASK)
        except anthropic.PermissionDeniedError:
            break
        assert time.monotonic() < deadline, "the policy never applied to the count"
        await anyio.sleep(0.05)
    error = await _same_refusal(claude, "other", 403)
    assert error["type"] == "permission_error", error
    assert (await claude.messages.count_tokens(model="g", messages=ASK)).input_tokens > 0
    assert sim.state.stats.requests == 0, "a count or a refused message reached a provider"


async def _counting(world, **fields) -> anthropic.AsyncAnthropic:
    """A client with a key of a tenant of `world` (`fields`: the key's), which counts on group `g`."""
    w, _ = world
    tenant, _ = await w.tenant("acme")
    claude = _claude(w, await _key(w, tenant, **fields))
    assert (await claude.messages.count_tokens(model="g", messages=ASK)).input_tokens > 0
    return claude


async def test_a_model_outside_the_keys_scope_and_an_unknown_model_are_refused(world):
    sim = world[1]
    claude = await _counting(world, scopes_models=["g"])
    scoped_out = await _same_refusal(claude, "other", 403)
    assert scoped_out["type"] == "permission_error" and "other" in scoped_out["message"], scoped_out
    unknown = await _same_refusal(claude, "no-such-group", 404)
    assert unknown["type"] == "not_found_error", unknown
    assert sim.state.stats.requests == 0, "a count or a refused message reached a provider"


async def test_an_auditor_key_counts_though_it_calls_no_model(world):
    sim = world[1]
    claude = await _counting(world, roles=["auditor"])
    with pytest.raises(anthropic.PermissionDeniedError):
        await claude.messages.create(model="g", max_tokens=16, messages=ASK)
    assert sim.state.stats.requests == 0
