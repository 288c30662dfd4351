"""Extended thinking in the anthropic simulator (and so in every Claude path that reuses it:
Foundry, Vertex, Bedrock InvokeModel), judged by the official anthropic SDK: signed thinking
blocks, streamed as thinking and signature deltas, accepted back only unchanged, and Anthropic's
rules for budgets and sampling."""

from __future__ import annotations

import anthropic
import pytest

from multihome.simulators import SimulatorConfig, start_simulator_in_thread

KEY = "sk-ant-thinking-sim"
THINK = {"type": "enabled", "budget_tokens": 2048}
TOOLS = [{"name": "get_weather", "description": "w", "input_schema": {"type": "object", "properties": {}}}]
ASK = [{"role": "user", "content": "use get_weather"}]


@pytest.fixture(scope="module")
def client():
    sim = start_simulator_in_thread(SimulatorConfig(kind="anthropic", api_key=KEY))
    yield anthropic.Anthropic(base_url=sim.url, api_key=KEY, max_retries=0, timeout=10)
    sim.close()


def test_a_thinking_block_comes_first_and_goes_back_unchanged(client):
    first = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=4096, thinking=THINK, messages=ASK, tools=TOOLS
    )
    assert [b.type for b in first.content][0] == "thinking" and first.stop_reason == "tool_use"
    thinking = first.content[0]
    assert thinking.thinking and thinking.signature
    # The thinking part of output_tokens, as the SDK reads it (OutputTokensDetails).
    assert 0 < first.usage.output_tokens_details.thinking_tokens < first.usage.output_tokens
    use = next(b for b in first.content if b.type == "tool_use")
    history = [
        *ASK,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
    ]
    second = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=4096, thinking=THINK, messages=history, tools=TOOLS
    )
    assert second.content[-1].type == "text"

    tampered = [dict(m) for m in history]
    blocks = [dict(b) for b in tampered[1]["content"]]
    blocks[0]["thinking"] += " (edited)"
    tampered[1]["content"] = blocks
    with pytest.raises(anthropic.BadRequestError, match="Invalid `signature` in `thinking` block"):
        client.messages.create(
            model="claude-sonnet-4-5", max_tokens=4096, thinking=THINK, messages=tampered, tools=TOOLS
        )


def test_the_stream_carries_thinking_and_signature_deltas(client):
    with client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=4096,
        thinking=THINK,
        messages=[{"role": "user", "content": "Hello there"}],
    ) as stream:
        kinds = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert "thinking_delta" in kinds and "signature_delta" in kinds and "text_delta" in kinds
    assert final.content[0].type == "thinking" and final.content[0].signature
    assert final.content[1].type == "text" and "Hello there" in final.content[1].text
    assert 0 < final.usage.output_tokens_details.thinking_tokens < final.usage.output_tokens


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 512}}, "greater than or equal to 1024"),
        ({"thinking": {"type": "enabled", "budget_tokens": 5000}}, "`max_tokens` must be greater"),
        ({"thinking": THINK, "extra_body": {"temperature": 0.2}}, "`temperature` may only be set to 1"),
        ({"thinking": THINK, "tools": TOOLS, "tool_choice": {"type": "any"}}, "forces tool use"),
    ],
)
def test_anthropics_thinking_rules(client, extra, message):
    with pytest.raises(anthropic.BadRequestError, match=message):
        client.messages.create(model="claude-sonnet-4-5", max_tokens=4096, messages=ASK, **extra)
