"""A tenant's conversations and memory records at most, at the API (`responses.conversations.per_tenant`,
`memory.per_tenant`; docs/responses.md "A tenant's conversations", docs/memory.md "A tenant's memory"): the
official openai SDK, with its default retries, against the app in process on SQLite and PostgreSQL. A write
past the tenant's limit is a 429 in OpenAI's envelope (`type` `insufficient_quota`, `code`
`conversation_quota_exceeded` or `memory_quota_exceeded`, naming the setting) that the SDK does not retry
(`x-should-retry: false`); another tenant of the same gateway goes on; a delete makes room."""

from __future__ import annotations

import httpx
import openai
import pytest

from multihome.crypto import init_key_file
from openai_schemas import problems
from stored_app import STORES, store_url, stored_world

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-conversation-quota"
QUOTA = {"conversations": {"per_tenant": {"max_conversations": 2, "max_bytes": 4000}}}
MEMORY = {"per_tenant": {"max_records": 2, "max_namespaces": 2}}


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("MH_TEST_CONV_QUOTA", ADMIN_KEY)


@pytest.fixture(params=STORES)
async def world(request, tmp_path):
    init_key_file(tmp_path / "kms.key")  # memory needs the gateway's keys
    kms = {"local": {"key_file": str(tmp_path / "kms.key")}}
    url = store_url(request, tmp_path)
    async with stored_world(url, "MH_TEST_CONV_QUOTA", ADMIN_KEY, responses=QUOTA, memory=MEMORY, kms=kms) as made:
        yield made


def _sdk(key: str, transport: httpx.ASGITransport, sent: list) -> openai.AsyncOpenAI:
    """The SDK with its own retry rule (2 retries of a 429 unless told not to), counting what it sends."""

    async def count(request: httpx.Request) -> None:
        sent.append(request.url.path)

    http = httpx.AsyncClient(transport=transport, base_url="http://gw/v1", event_hooks={"request": [count]})
    return openai.AsyncOpenAI(api_key=key, base_url="http://gw/v1", http_client=http)


def _msg(text: str) -> dict:
    return {"type": "message", "role": "user", "content": text}


def _refused(err: pytest.ExceptionInfo, setting: str, code: str = "conversation_quota_exceeded") -> None:
    body = err.value.response.json()
    assert not problems("ErrorResponse", body), body
    assert err.value.status_code == 429 and err.value.response.headers["x-should-retry"] == "false"
    assert (body["error"]["type"], body["error"]["code"]) == ("insufficient_quota", code)
    assert setting in body["error"]["message"], body


async def test_a_tenant_past_its_conversations_is_refused_once_and_others_go_on(world):
    w, _, transport = world
    _, key = await w.tenant("acme")
    _, other_key = await w.tenant("globex")
    sent: list = []
    sdk = _sdk(key, transport, sent)
    first = await sdk.conversations.create(items=[_msg("hello")])
    await sdk.conversations.create()
    sent.clear()
    with pytest.raises(openai.RateLimitError) as err:
        await sdk.conversations.create()
    _refused(err, "responses.conversations.per_tenant.max_conversations")
    assert sent == ["/v1/conversations"]  # not retried: no retry finds room
    with pytest.raises(openai.RateLimitError) as err:  # bytes: one add too big for what is left
        await sdk.conversations.items.create(first.id, items=[_msg("x" * 4000)])
    _refused(err, "responses.conversations.per_tenant.max_bytes")
    assert len((await sdk.conversations.items.list(first.id)).data) == 1
    other = _sdk(other_key, transport, [])
    for _ in range(2):
        await other.conversations.create()  # another tenant: its own count
    await sdk.conversations.delete(first.id)
    await sdk.conversations.create(items=[_msg("room again")])


async def test_a_tenant_past_its_memory_records_is_refused_once_and_a_delete_makes_room(world):
    w, _, transport = world
    _, key = await w.tenant("acme")
    sent: list = []
    sdk = _sdk(key, transport, sent)
    ns = {"agent_id": "bot", "user_id": "u1"}
    body = {**ns, "records": [{"text": "likes jazz"}, {"text": "lives in Oslo"}]}
    made = await sdk.post("/memory/records", body=body, cast_to=object)
    sent.clear()
    with pytest.raises(openai.RateLimitError) as err:
        await sdk.post("/memory/records", body={**ns, "text": "one too many"}, cast_to=object)
    _refused(err, "memory.per_tenant.max_records", "memory_quota_exceeded")
    assert sent == ["/v1/memory/records"]
    await sdk.delete(f"/memory/records/{made['data'][0]['id']}", cast_to=object)
    await sdk.post("/memory/records", body={**ns, "text": "room again"}, cast_to=object)


async def test_a_tenant_past_its_memory_namespaces_is_refused_once(world):
    """A namespace stays when its records go: past `max_namespaces` a new one is a 429 the SDK does not retry."""
    w, _, transport = world
    _, key = await w.tenant("acme")
    sent: list = []
    sdk = _sdk(key, transport, sent)
    for user in ("u1", "u2"):
        await sdk.post("/memory/namespaces", body={"agent_id": "bot", "user_id": user}, cast_to=object)
    sent.clear()
    with pytest.raises(openai.RateLimitError) as err:
        await sdk.post("/memory/records", body={"agent_id": "bot", "user_id": "u3", "text": "new"}, cast_to=object)
    _refused(err, "memory.per_tenant.max_namespaces", "memory_quota_exceeded")
    assert sent == ["/v1/memory/records"]
    await sdk.post("/memory/records", body={"agent_id": "bot", "user_id": "u2", "text": "an old one"}, cast_to=object)
