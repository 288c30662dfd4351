"""The Anthropic door in front of Anthropic, Gemini and OpenAI upstreams, the app in process and the official
anthropic SDK as its client: what the door can answer only from what the upstream tells.

A streamed answer's `message_start` carries the prompt's input tokens when the upstream told them at its own
stream's start (an Anthropic upstream's message_start, Gemini's first chunk), as Anthropic's API does and as
clients read them there (LangChain, cost trackers); from an upstream that reports usage only in its last chunk
(OpenAI's include_usage) it says 0 and the count comes in `message_delta` (docs/anthropic-front-door.md
"Streaming"). A stop sequence hit is `stop_reason: stop_sequence` with the sequence when the upstream says
which matched (Anthropic does; OpenAI and Gemini do not: `end_turn`)."""

from __future__ import annotations

import anthropic
import httpx2
import pytest

from builders import open_door, simulated, single
from multihome.simulators import SimulatorConfig, start_simulator
from openai_schemas import problems
from stored_app import served

pytestmark = pytest.mark.anyio
KEY_ENV = "MH_TEST_START_USAGE_UPSTREAM_KEY"
ASK = [{"role": "user", "content": "Tell me about the weather in Lisbon in some detail, please."}]


MODELS = {"anthropic": "claude-sonnet-4-5", "gemini": "gemini-2.5-flash", "openai": "m"}
TOLD_AT_START = ("anthropic", "gemini")  # Gemini counts the prompt in every chunk, the first included


@pytest.fixture(params=list(MODELS))
async def claude(request, monkeypatch):
    """(the upstream's kind, an anthropic SDK client of the app in process over a simulator of that kind, an
    httpx client of the app)."""
    monkeypatch.setenv(KEY_ENV, "sk-upstream-start-usage")
    sim = await start_simulator(SimulatorConfig(kind=request.param, name="up"))
    try:
        upstream = simulated(request.param, sim.url, key_env=KEY_ENV)
        cfg = single(upstream, model=MODELS[request.param], server=open_door())
        async with served(cfg) as (client, _, app):
            http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://gw")
            sdk = anthropic.AsyncAnthropic(api_key="x", base_url="http://gw", max_retries=0, http_client=http)
            yield request.param, sdk, client
    finally:
        await sim.close()


async def test_message_start_carries_the_input_tokens_the_upstream_told_at_its_start(claude):
    kind, client, _ = claude
    async with client.messages.stream(model="g", max_tokens=200, system="Be brief.", messages=ASK) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_message()
    start, delta = events[0], [e for e in events if e.type == "message_delta"][-1]
    assert start.type == "message_start", events
    assert final.usage.input_tokens > 0 and delta.usage.input_tokens == final.usage.input_tokens
    if kind in TOLD_AT_START:  # the same count as the end's
        assert start.message.usage.input_tokens == final.usage.input_tokens, start.message.usage
        assert start.message.usage.cache_read_input_tokens == final.usage.cache_read_input_tokens
    else:  # OpenAI says usage only in its last chunk: no count is made up at the start
        assert start.message.usage.input_tokens == 0, start.message.usage


async def test_a_stop_sequence_hit_is_named_when_the_upstream_says_which(claude):
    kind, client, http = claude
    ask = {"model": "g", "max_tokens": 100, "stop_sequences": ["nowhere", "Lisbon"], "messages": ASK}
    message = await client.messages.create(**ask)
    async with client.messages.stream(**ask) as stream:
        streamed = await stream.get_final_message()
    said = ("stop_sequence", "Lisbon") if kind == "anthropic" else ("end_turn", None)
    assert (message.stop_reason, message.stop_sequence) == said, message
    assert (streamed.stop_reason, streamed.stop_sequence) == said, streamed
    # The OpenAI door's answer names it as vLLM does (`choices[].stop_reason`), within OpenAI's published schema.
    chat = {"model": "g", "stop": ["Lisbon"], "messages": ASK}
    completion = (await http.post("/v1/chat/completions", json=chat)).json()
    assert not problems("CreateChatCompletionResponse", completion), completion
    assert completion["choices"][0].get("stop_reason") == said[1], completion
