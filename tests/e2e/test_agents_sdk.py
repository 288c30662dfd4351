"""The OpenAI Agents SDK (`openai-agents`), pointed at Multihome with its default Responses model
(OpenAIResponsesModel), runs an agent with a function tool to completion while a non-OpenAI provider
(the Anthropic simulator, then Bedrock's) serves every turn: the tool is called, its output goes
back, the final answer arrives. Tracing is off and the client is the gateway's, so nothing leaves."""

from __future__ import annotations

import asyncio
import json

import pytest
from openai import AsyncOpenAI

from .fleet import CLIENT_KEY, fleet
from .stores import head_database

agents = pytest.importorskip("agents")


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agents-sdk")
    head_database(request, "sqlite", tmp)  # fleet_config's file, at the head revision
    with fleet(tmp) as f:
        yield f


def _settings() -> object:
    """Most of what an application sets on a Responses model; each field reaches the gateway."""
    from openai.types.shared import Reasoning

    return agents.ModelSettings(
        temperature=0.3,
        top_p=0.9,
        tool_choice="auto",
        parallel_tool_calls=True,
        truncation="auto",
        max_tokens=512,
        reasoning=Reasoning(effort="low", summary="auto"),
        verbosity="low",
        metadata={"app": "agents-e2e"},
        store=True,
        prompt_cache_retention="24h",
        include_usage=True,
        response_include=["reasoning.encrypted_content"],
        extra_args={"prompt_cache_key": "agents-e2e", "safety_identifier": "user-1", "service_tier": "auto"},
    )


async def _agent_run(client: AsyncOpenAI, model: str, tool: object, stream: bool, mode: str) -> object:
    agents.set_default_openai_client(client, use_for_tracing=False)
    agents.set_default_openai_api("responses")
    agents.set_tracing_disabled(True)
    settings = _settings() if mode != "plain" else agents.ModelSettings()
    agent = agents.Agent(
        name="Weather",
        instructions="Answer with the tool's result.",
        tools=[tool],
        model=model,
        model_settings=settings,
    )
    extra: dict = {}
    if mode == "chained":
        extra["auto_previous_response_id"] = True
    elif mode == "conversation":
        extra["conversation_id"] = (await client.conversations.create()).id
    if not stream:
        return await agents.Runner.run(agent, "What is the weather in Lima?", **extra)
    result = agents.Runner.run_streamed(agent, "What is the weather in Lima?", **extra)
    async for _ in result.stream_events():
        pass
    return result


def _run(world, model: str, stream: bool, mode: str = "plain") -> tuple[object, list[str]]:
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"foggy, 17C in {city}"

    async def main() -> object:
        # Closed inside the loop that opened it: a client left to the garbage collector closes its
        # connections on a loop that is gone (an unraisable error in whichever test runs next).
        async with AsyncOpenAI(base_url=world.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30) as client:
            return await _agent_run(client, model, get_weather, stream, mode)

    return asyncio.run(main()), calls


@pytest.mark.parametrize("mode", ["plain", "chained", "conversation"])
@pytest.mark.parametrize("stream", [False, True], ids=["run", "run_streamed"])
@pytest.mark.parametrize("group,kind", [("claude", "anthropic"), ("bedrock", "bedrock")])
def test_an_agent_with_a_function_tool_runs_to_completion_on_a_non_openai_provider(world, group, kind, stream, mode):
    before = len(world.sims[kind].requests())
    openai_before = len(world.sims["openai"].requests())
    result, calls = _run(world, group, stream, mode)
    assert calls, "the tool was never called"
    assert isinstance(result.final_output, str) and result.final_output
    kinds = [item.type for item in result.new_items]
    assert "tool_call_item" in kinds and "tool_call_output_item" in kinds and kinds[-1] == "message_output_item"
    sent = world.sims[kind].requests()[before:]
    assert len(sent) >= 2  # the turn that called the tool, and the one that answered with its output
    # The last turn carried the whole run: however the SDK sent it (full input, a previous_response_id chain
    # or a conversation), the gateway rebuilt the question, the call and its output for the provider.
    assert "What is the weather in Lima?" in sent[-1]["body"] and "foggy, 17C in" in sent[-1]["body"]
    assert len(world.sims["openai"].requests()) == openai_before  # nothing went to OpenAI
    assert json.loads(sent[0]["body"])  # a real upstream request, not a replay
