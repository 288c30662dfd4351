"""The Anthropic-shaped `GET /v1/models` (a request with `anthropic-version`, as every anthropic SDK call has)
lists the model groups `/v1/messages` can serve, so an Anthropic client picks a Messages model from it: an
embeddings group is left out (and retrieving it is a 404 saying why); OpenAI's list keeps every group."""

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


async def test_an_anthropic_client_lists_only_groups_messages_can_serve():
    async with served(_config()) as (client, _, app):
        http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://gw")
        claude = anthropic.AsyncAnthropic(api_key="x", base_url="http://gw", max_retries=0, http_client=http)
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
