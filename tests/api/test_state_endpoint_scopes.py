"""An API key's endpoint scope covers the stateful routes too (docs/policy.md): conversations and stored
responses belong to `responses` (OpenAI's Responses API), the /v1/memory routes to `memory`. Before, a key
scoped to `chat` alone could read and write the tenant's conversations and memory. The admin API issues
keys with these names and refuses a name it does not know (a typo was a key that could call nothing).
The app in process, on SQLite and PostgreSQL."""

from __future__ import annotations

import anthropic
import httpx2
import openai
import pytest

from admin_http import error, ok
from stored_app import STORES, StoredWorld, sdk_client, store_url, stored_app, stored_world

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-state-scopes"
RECORD = {"agent_id": "a", "user_id": "u", "text": "the user likes tea"}


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_STATE_SCOPES", ADMIN_KEY)


@pytest.fixture(params=STORES)
async def world(request, tmp_path):
    url = store_url(request, tmp_path)
    async with stored_app(url, "MH_TEST_STATE_SCOPES") as (client, app):
        yield StoredWorld(client, url, ADMIN_KEY, app)


@pytest.fixture(params=STORES)
async def sdk_world(request, tmp_path):
    """(the StoredWorld, its simulated upstream, the transport for an SDK client) on each store."""
    async with stored_world(store_url(request, tmp_path), "MH_TEST_STATE_SCOPES", ADMIN_KEY) as parts:
        yield parts


async def _key(w: StoredWorld, tenant: str, endpoints: list[str]) -> str:
    body = {"name": "narrow", "roles": ["member"], "scopes_endpoints": endpoints}
    return (await ok(await w.call("POST", f"/admin/v1/tenants/{tenant}/keys", json=body), 201))["key"]


async def _refused(w: StoredWorld, method: str, path: str, key: str, scope: str, **kw) -> None:
    err = error(await w.call(method, path, key, **kw), 403)
    assert err["code"] == "endpoint_not_in_key_scope", err
    assert f"not '{scope}'" in err["message"], err


async def test_a_chat_only_key_reaches_no_conversation_nor_memory(world):
    w = world
    tenant, full = await w.tenant("acme")
    conv = (await ok(await w.call("POST", "/v1/conversations", full, json={})))["id"]
    record = (await ok(await w.call("POST", "/v1/memory/records", full, json=RECORD)))["id"]
    chat = await _key(w, tenant, ["chat"])
    await _refused(w, "POST", "/v1/conversations", chat, "responses", json={})
    await _refused(w, "GET", f"/v1/conversations/{conv}", chat, "responses")
    await _refused(w, "GET", f"/v1/conversations/{conv}/items", chat, "responses")
    await _refused(w, "DELETE", f"/v1/conversations/{conv}", chat, "responses")
    await _refused(w, "GET", "/v1/responses/resp_0123456789abcdef0123456789abcdef", chat, "responses")
    await _refused(w, "POST", "/v1/memory/records", chat, "memory", json=RECORD)
    await _refused(w, "GET", f"/v1/memory/records/{record}", chat, "memory")
    await _refused(w, "POST", "/v1/memory/search", chat, "memory", json={**RECORD, "query": "tea"})
    await _refused(w, "DELETE", "/v1/memory/users/u", chat, "memory")
    # Nothing changed: the full key still finds both.
    assert (await ok(await w.call("GET", f"/v1/conversations/{conv}", full)))["id"] == conv
    assert (await ok(await w.call("GET", f"/v1/memory/records/{record}", full)))["id"] == record


async def test_keys_scoped_to_responses_or_memory_reach_their_own_routes_only(world):
    w = world
    tenant, _ = await w.tenant("acme")
    responses = await _key(w, tenant, ["responses"])
    memory = await _key(w, tenant, ["memory"])
    conv = (await ok(await w.call("POST", "/v1/conversations", responses, json={})))["id"]
    assert (await ok(await w.call("GET", f"/v1/conversations/{conv}/items", responses)))["data"] == []
    await _refused(w, "GET", f"/v1/conversations/{conv}", memory, "responses")
    record = (await ok(await w.call("POST", "/v1/memory/records", memory, json=RECORD)))["id"]
    assert (await ok(await w.call("GET", f"/v1/memory/records/{record}", memory)))["id"] == record
    await _refused(w, "GET", f"/v1/memory/records/{record}", responses, "memory")


async def test_the_admin_api_refuses_an_endpoint_scope_it_does_not_know(world):
    w = world
    tenant, _ = await w.tenant("acme")
    for name in ("conversations", "chats"):
        body = {"name": "typo", "scopes_endpoints": ["chat", name]}
        err = error(await w.call("POST", f"/admin/v1/tenants/{tenant}/keys", json=body), 400)
        assert err["param"] == "scopes_endpoints" and name in err["message"], err
        assert "'responses' covers stored responses and conversations" in err["message"]


async def test_the_responses_memory_tool_needs_the_memory_scope(world):
    """The tool reads and writes what /v1/memory does: a key scoped to `responses` alone is refused it
    before any model call, as it is refused the routes."""
    w = world
    tenant, _ = await w.tenant("acme")
    body = {"model": "g", "input": "what do I like?", "tools": [{"type": "memory", "agent_id": "a", "user_id": "u"}]}
    await _refused(w, "POST", "/v1/responses", await _key(w, tenant, ["responses"]), "memory", json=body)
    both = await _key(w, tenant, ["responses", "memory"])
    answered = await w.call("POST", "/v1/responses", both, json=body)
    assert answered.status_code == 200 and answered.json()["status"] == "completed", answered.text


async def test_counting_a_messages_body_needs_the_messages_scope(world):
    """`/v1/messages/count_tokens` is part of Anthropic's Messages API, as conversations are of Responses: a
    key scoped to `chat` alone is refused it (in Anthropic's envelope), a `messages` key counts."""
    w = world
    tenant, _ = await w.tenant("acme")
    body = {"model": "g", "messages": [{"role": "user", "content": "how many tokens is this?"}]}
    refused = await w.call("POST", "/v1/messages/count_tokens", await _key(w, tenant, ["chat"]), json=body)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["type"] == "permission_error"
    assert "not 'messages'" in refused.json()["error"]["message"]
    counted = await w.call("POST", "/v1/messages/count_tokens", await _key(w, tenant, ["messages"]), json=body)
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 0, counted.text


async def test_counting_a_responses_body_needs_the_responses_scope(world):
    """`/v1/responses/input_tokens` reads what a turn would (a stored chain, a conversation): a key scoped to
    `chat` alone is refused it, a `responses` key counts."""
    w = world
    tenant, _ = await w.tenant("acme")
    body = {"model": "g", "input": "how many tokens is this?"}
    await _refused(w, "POST", "/v1/responses/input_tokens", await _key(w, tenant, ["chat"]), "responses", json=body)
    counted = await w.call("POST", "/v1/responses/input_tokens", await _key(w, tenant, ["responses"]), json=body)
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 0, counted.text


async def test_an_auditor_reads_stored_state_and_changes_none_of_it(world):
    """An auditor's credential is read-only (docs/api.md "Roles"): it reads the tenant's memory, conversations
    and stored responses, and every write or delete of them is a 403 naming its role; it wrote memory records."""
    w = world
    tenant, full = await w.tenant("acme")
    body = {"name": "auditor", "roles": ["auditor"]}
    auditor = (await ok(await w.call("POST", f"/admin/v1/tenants/{tenant}/keys", json=body), 201))["key"]
    conv = (await ok(await w.call("POST", "/v1/conversations", full, json={})))["id"]
    item = {"items": [{"type": "message", "role": "user", "content": "hi"}]}
    item_id = (await ok(await w.call("POST", f"/v1/conversations/{conv}/items", full, json=item)))["data"][0]["id"]
    record = (await ok(await w.call("POST", "/v1/memory/records", full, json=RECORD)))["id"]
    stored = (await ok(await w.call("POST", "/v1/responses", full, json={"model": "g", "input": "hi"})))["id"]
    ns = "agent_id=a&user_id=u"
    writes = [
        ("POST", "/v1/memory/records", {"json": RECORD}),
        ("DELETE", f"/v1/memory/records/{record}", {}),
        ("POST", "/v1/memory/namespaces", {"json": {"agent_id": "a", "user_id": "u", "default_ttl_seconds": 60}}),
        ("DELETE", f"/v1/memory/namespaces?{ns}", {}),
        ("DELETE", "/v1/memory/users/u", {}),
        ("POST", "/v1/conversations", {"json": {}}),
        ("POST", f"/v1/conversations/{conv}", {"json": {"metadata": {"k": "v"}}}),
        ("POST", f"/v1/conversations/{conv}/items", {"json": item}),
        ("DELETE", f"/v1/conversations/{conv}/items/{item_id}", {}),
        ("DELETE", f"/v1/conversations/{conv}", {}),
        ("DELETE", f"/v1/responses/{stored}", {}),
        ("POST", f"/v1/responses/{stored}/cancel", {}),
        ("POST", "/v1/responses", {"json": {"model": "g", "input": "hi"}}),  # stored by default
        ("POST", "/v1/responses", {"json": {"model": "g", "input": "hi", "conversation": conv, "store": False}}),
        (
            "POST",
            "/v1/responses",
            {
                "json": {
                    "model": "g",
                    "input": "hi",
                    "store": False,
                    "tools": [{"type": "memory", "agent_id": "a", "user_id": "u"}],
                }
            },
        ),
    ]
    for method, path, kw in writes:
        err = error(await w.call(method, path, auditor, **kw), 403)
        assert (err["type"], err["code"]) == ("permission_error", "insufficient_role"), (method, path, err)
        assert "the role auditor, which reads stored state and does not change it" in err["message"], err
    # Nothing changed, and every read works.
    assert (await ok(await w.call("GET", f"/v1/memory/records/{record}", auditor)))["id"] == record
    assert [r["id"] for r in (await ok(await w.call("GET", f"/v1/memory/records?{ns}", auditor)))["data"]] == [record]
    assert (
        await ok(
            await w.call("POST", "/v1/memory/search", auditor, json={"agent_id": "a", "user_id": "u", "query": "tea"})
        )
    )["data"]
    assert (await ok(await w.call("GET", "/v1/memory/namespaces", auditor)))["data"]
    assert (await ok(await w.call("GET", f"/v1/conversations/{conv}", auditor)))["metadata"] == {}
    assert [i["id"] for i in (await ok(await w.call("GET", f"/v1/conversations/{conv}/items", auditor)))["data"]] == [
        item_id
    ]
    assert (await ok(await w.call("GET", f"/v1/responses/{stored}", auditor)))["id"] == stored
    assert (await ok(await w.call("GET", f"/v1/responses/{stored}/input_items", auditor)))["data"]
    search_only = [{"type": "memory", "agent_id": "a", "user_id": "u", "allowed_tools": ["memory_search"]}]
    for extra in ({}, {"tools": search_only}):  # an unstored answer writes nothing, but it calls a model
        answer = {"model": "g", "input": "hi", "store": False, **extra}
        err = error(await w.call("POST", "/v1/responses", auditor, json=answer), 403)
        assert err["code"] == "insufficient_role" and "calls no model" in err["message"], err


async def test_an_auditor_calls_no_model_through_either_sdk(sdk_world):
    """An auditor-only key calls no model (it would spend the tenant's budget): chat, embeddings, an unstored
    response (the openai SDK) and /v1/messages (the anthropic SDK, Anthropic's error shape) are 403
    insufficient_role naming the role, and no call reaches the upstream. A key made without roles (member)
    and an auditor that is also a member call models; route explain still answers the auditor."""
    w, sim, transport = sdk_world
    tenant, _ = await w.tenant("acme")
    keys = f"/admin/v1/tenants/{tenant}/keys"
    auditor = (await ok(await w.call("POST", keys, json={"name": "a", "roles": ["auditor"]}), 201))["key"]
    plain = (await ok(await w.call("POST", keys, json={"name": "p"}), 201))["key"]
    both = {"name": "b", "roles": ["auditor", "member"]}
    member_auditor = (await ok(await w.call("POST", keys, json=both), 201))["key"]
    client = sdk_client(auditor, transport)
    message = [{"role": "user", "content": "hi"}]
    refused = [
        client.chat.completions.create(model="g", messages=message),
        client.embeddings.create(model="g", input="hi"),
        client.responses.create(model="g", input="hi", store=False),
    ]
    for attempt in refused:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await attempt
        err = caught.value.body
        assert (err["type"], err["code"]) == ("permission_error", "insufficient_role"), err
        assert "the role auditor" in err["message"] and "calls no model" in err["message"], err
    # The anthropic SDK's own httpx (httpx2), on the same app in process.
    anthropic_http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=w.app), base_url="http://gw")
    claude = anthropic.AsyncAnthropic(api_key=auditor, base_url="http://gw", max_retries=0, http_client=anthropic_http)
    with pytest.raises(anthropic.PermissionDeniedError) as caught_messages:
        await claude.messages.create(model="g", max_tokens=16, messages=message)
    body = caught_messages.value.body
    assert body["type"] == "error" and body["error"]["type"] == "permission_error", body
    assert "the role auditor" in body["error"]["message"], body
    assert sim.state.stats.requests == 0
    explained = await w.call("POST", "/v1/route/explain", auditor, json={"model": "g", "messages": message})
    assert explained.status_code == 200, explained.text
    for key in (plain, member_auditor):
        answer = await sdk_client(key, transport).chat.completions.create(model="g", messages=message)
        assert answer.choices[0].message.content


async def test_explain_says_an_auditors_model_call_is_refused_as_the_call_is(world):
    """Route explain and policy explain of an auditor-only key say its call is refused, with the 403's own code
    and message (the plan stays readable); a memory search's embedding, which it may make, is not refused."""
    w = world
    tenant, _ = await w.tenant("acme")
    keys = f"/admin/v1/tenants/{tenant}/keys"
    made = await ok(await w.call("POST", keys, json={"name": "a", "roles": ["auditor"]}), 201)
    auditor = made["key"]
    chat = {"model": "g", "messages": [{"role": "user", "content": "hi"}]}
    real = error(await w.call("POST", "/v1/chat/completions", auditor, json=chat), 403)
    explained = await ok(await w.call("POST", "/v1/route/explain", auditor, json=chat))
    assert explained["refused"] == {"status": 403, **real}, explained
    assert explained["would_attempt"] == [] and explained["plans"], explained
    embedding = await ok(await w.call("POST", "/v1/route/explain?work=memory_embedding", auditor, json=chat))
    assert "refused" not in embedding and embedding["would_attempt"], embedding
    stored = {"model": "g", "input": "hi", "store": True}
    real_stored = error(await w.call("POST", "/v1/responses", auditor, json=stored), 403)
    step = await ok(await w.call("POST", "/v1/route/explain?work=stored_response", auditor, json=chat))
    assert step["refused"] == {"status": 403, **real_stored}, step
    for caller in ({"key_id": made["id"]}, {"roles": ["auditor"]}):
        body = {"tenant_id": tenant, "model": "g", **caller}
        decision = await ok(await w.call("POST", "/admin/v1/policy/explain", json=body))
        assert (decision["allowed"], decision["deployments"]) == (False, []), decision
        assert (decision["code"], decision["message"]) == (real["code"], real["message"]), decision
    member = await ok(await w.call("POST", "/admin/v1/policy/explain", json={"tenant_id": tenant, "model": "g"}))
    assert member["allowed"] and member["code"] is None, member
    # An auditor key policy refuses too (no chat in its endpoint scope): its role is checked first, as the call's.
    scoped = {"name": "s", "roles": ["auditor"], "scopes_endpoints": ["embeddings"]}
    narrow = (await ok(await w.call("POST", keys, json=scoped), 201))["key"]
    first = error(await w.call("POST", "/v1/chat/completions", narrow, json=chat), 403)
    explained = await ok(await w.call("POST", "/v1/route/explain", narrow, json=chat))
    assert explained["refused"] == {"status": 403, **first} and first["code"] == "insufficient_role", explained
    assert (explained["plans"], explained["would_attempt"]) == ([], []), explained
