"""An embeddings model group on the Anthropic door, which serves Messages only. The Anthropic-shaped
`GET /v1/models` (a request with `anthropic-version`, as every anthropic SDK call has) lists the groups
`/v1/messages` can serve, so an Anthropic client picks a Messages model from it: an embeddings group is left
out (and retrieving it is a 404 saying why); OpenAI's list keeps every group. `count_tokens` refuses an
embeddings group as `/v1/messages` does (400), not counting a body no deployment of it can take."""

from __future__ import annotations

import anthropic
import httpx2
import pytest

from builders import config, deployment, group, open_door, simulated
from stored_app import served

pytestmark = pytest.mark.anyio


def _config() -> dict:
    return config(
        server=open_door(),
        providers={"p": simulated("openai", "http://127.0.0.1:9")},  # never called: listing reads the config
        deployments={
            "chat-d": deployment("p", "m-chat"),
            "emb-d": deployment("p", "m-emb", capabilities=["embeddings"]),
        },
        model_groups={"chatty": group("chat-d"), "embedder": group("emb-d"), "both": group("emb-d", "chat-d")},
    )


@pytest.fixture
async def door():
    """(an httpx client of the app, an anthropic SDK client of it)."""
    async with served(_config()) as (client, _, app):
        http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://gw")
        yield client, anthropic.AsyncAnthropic(api_key="x", base_url="http://gw", max_retries=0, http_client=http)


async def test_an_anthropic_client_lists_only_groups_messages_can_serve(door):
    client, claude = door
    page = await claude.models.list()
    assert [m.id for m in page.data] == ["chatty", "both"]
    assert (page.first_id, page.last_id) == ("chatty", "both")
    assert (await claude.models.retrieve("both")).id == "both"
    with pytest.raises(anthropic.NotFoundError) as info:
        await claude.models.retrieve("embedder")
    assert info.value.body["error"]["type"] == "not_found_error", info.value.body
    assert "serves no Messages call" in info.value.body["error"]["message"], info.value.body
    openai_list = (await client.get("/v1/models")).json()
    assert [m["id"] for m in openai_list["data"]] == ["chatty", "embedder", "both"]
    assert (await client.get("/v1/models/embedder")).json()["id"] == "embedder"


async def test_count_tokens_refuses_an_embeddings_group_as_a_message_is_refused(door):
    _, claude = door
    ask = [{"role": "user", "content": "how many tokens?"}]
    with pytest.raises(anthropic.BadRequestError) as counted:
        await claude.messages.count_tokens(model="embedder", messages=ask)
    with pytest.raises(anthropic.BadRequestError) as created:
        await claude.messages.create(model="embedder", max_tokens=16, messages=ask)
    for refused in (counted.value.body, created.value.body):
        assert refused["error"]["type"] == "invalid_request_error", refused
        assert "emb-d: lacks chat" in refused["error"]["message"], refused
    assert (await claude.messages.count_tokens(model="both", messages=ask)).input_tokens > 0
