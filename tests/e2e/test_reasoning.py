"""Reasoning across APIs, end to end: OpenAI clients (the official openai SDK) asking Claude to
think with `reasoning_effort`, through the real gateway to Anthropic's API and to Bedrock's
InvokeModel; the reasoning comes back as `reasoning_content` and signed `thinking_blocks`, and the
blocks sent back on the next turn reach Claude unchanged (the simulator checks every signature)."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from builders import api_keys, config, deployment, group, simulated

from .helpers import aws_env
from .processes import Gateway, Simulator

CLIENT_KEY = "mh-reasoning-client-key"
ANT_KEY = "sk-ant-reasoning-e2e"
AKID, SECRET = "AKIDREASONINGE2E01", "reasoning-e2e-secret-0123456789"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
ASK = [{"role": "user", "content": "use get_weather"}]
GROUPS = ["claude-anthropic", "claude-bedrock", "claude-converse"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reasoning")
    secrets = {"SIM_ANT_KEY": ANT_KEY, "SIM_AKID": AKID, "SIM_SECRET": SECRET}
    sims: dict[str, Simulator] = {}
    gw = None
    try:
        sims["anthropic"] = Simulator("anthropic", "anthropic-sim", "--api-key-env", "SIM_ANT_KEY", env=secrets)
        sims["openai"] = Simulator("openai", "openai-sim")
        sims["bedrock"] = Simulator(
            "bedrock_anthropic",
            "bedrock-sim",
            "--region",
            "eu-west-1",
            "--aws-access-key-id-env",
            "SIM_AKID",
            "--aws-secret-access-key-env",
            "SIM_SECRET",
            env=secrets,
        )
        cfg = config(
            server=api_keys("MULTIHOME_API_KEY"),
            providers={
                "anthropic": simulated("anthropic", sims["anthropic"].url, key_env="ANT_UPSTREAM_KEY"),
                "openai": simulated("openai", sims["openai"].url),
                # Converse on the same Bedrock simulator: thinking via additionalModelRequestFields.
                "converse": simulated(
                    "bedrock", sims["bedrock"].url, region="eu-west-1", auth={"aws": {"profile": "multihome"}}
                ),
                "bedrock": simulated(
                    "bedrock_anthropic", sims["bedrock"].url, region="eu-west-1", auth={"aws": {"profile": "multihome"}}
                ),
            },
            deployments={
                "claude@anthropic": deployment("anthropic", "claude-sonnet-4-5"),
                "claude@bedrock": deployment("bedrock", "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"),
                "o4@openai": deployment("openai", "o4-mini"),
                "claude@converse": deployment("converse", "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"),
                "gptoss@converse": deployment("converse", "openai.gpt-oss-120b-1:0"),
                "r1@converse": deployment("converse", "eu.deepseek.r1-v1:0"),
            },
            model_groups={
                "claude-anthropic": group("claude@anthropic", retries=0),
                "claude-bedrock": group("claude@bedrock", retries=0),
                "reasoner": group("o4@openai", retries=0),
                "claude-converse": group("claude@converse", retries=0),
                "gptoss-converse": group("gptoss@converse", retries=0),
                "r1-converse": group("r1@converse", retries=0),
            },
        )
        env = {"MULTIHOME_API_KEY": CLIENT_KEY, "ANT_UPSTREAM_KEY": ANT_KEY, **aws_env(tmp, AKID, SECRET)}
        gw = Gateway(cfg, tmp, env)
        yield sims, gw
    finally:
        log = gw.stop() if gw is not None else ""
        for sim in sims.values():
            sim.stop()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture
def client(stack) -> openai.OpenAI:
    for sim in stack[0].values():
        sim.reset()
    return openai.OpenAI(base_url=stack[1].url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=15)


def _sent(stack, model: str) -> dict:
    sims = {"claude-anthropic": "anthropic", "claude-bedrock": "bedrock"}
    sims |= {g: "bedrock" for g in ("claude-converse", "gptoss-converse", "r1-converse")}
    sim = stack[0][sims.get(model, "openai")]
    return json.loads(sim.requests()[-1]["body"])


def _thinking_sent(stack, model: str) -> tuple[dict, int]:
    """(the thinking object, max tokens) the upstream got, wherever its API carries them."""
    sent = _sent(stack, model)
    if model == "claude-converse":
        return sent["additionalModelRequestFields"]["thinking"], sent["inferenceConfig"]["maxTokens"]
    return sent["thinking"], sent["max_tokens"]


def _replayed(stack, model: str) -> dict:
    """The first block of the replayed assistant turn, as {type, thinking, signature}."""
    first = _sent(stack, model)["messages"][1]["content"][0]
    if model == "claude-converse":
        text = first["reasoningContent"]["reasoningText"]
        return {"type": "thinking", "thinking": text["text"], "signature": text["signature"]}
    return first


@pytest.mark.parametrize("model", GROUPS)
def test_effort_becomes_a_budget_and_the_blocks_come_back_signed(stack, client, model):
    first = client.chat.completions.create(model=model, messages=ASK, tools=TOOLS, reasoning_effort="medium")
    assert _thinking_sent(stack, model) == ({"type": "enabled", "budget_tokens": 4096}, 4096 + 4096)
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert message.reasoning_content and "use get_weather" in message.reasoning_content
    [block] = message.thinking_blocks
    assert block["type"] == "thinking" and block["signature"] and block["thinking"] == message.reasoning_content
    # Anthropic names the thinking part of output_tokens (InvokeModel too); Converse does not split it.
    details = first.usage.completion_tokens_details
    if model == "claude-converse":
        assert details is None
    else:
        assert 0 < details.reasoning_tokens < first.usage.completion_tokens

    # The next turn carries the blocks back; Claude (the simulator) checks the signature.
    call = message.tool_calls[0]
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": message.content,
            "tool_calls": [call.model_dump()],
            "thinking_blocks": message.thinking_blocks,
        },
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = client.chat.completions.create(model=model, messages=history, tools=TOOLS, reasoning_effort="medium")
    assert second.choices[0].finish_reason == "stop"
    assert _replayed(stack, model) == {"type": "thinking", **{k: block[k] for k in ("thinking", "signature")}}

    history[1]["thinking_blocks"] = [{**block, "thinking": block["thinking"] + " (edited)"}]
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=model, messages=history, tools=TOOLS, reasoning_effort="medium")
    assert "signature" in refused.value.message


@pytest.mark.parametrize("model", GROUPS)
def test_a_stream_carries_reasoning_deltas_then_the_signed_block(client, model):
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello there"}], reasoning_effort="low", stream=True
    )
    reasoning, text, blocks = [], [], []
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        reasoning.append(getattr(delta, "reasoning_content", None) or "")
        text.append(delta.content or "")
        blocks += getattr(delta, "thinking_blocks", None) or []
    assert "Hello there" in "".join(reasoning) and "Hello there" in "".join(text)
    assert len(blocks) == 1 and blocks[0]["thinking"] == "".join(reasoning) and blocks[0]["signature"]


def test_sampling_that_thinking_forbids_is_dropped_and_reported(stack, client):
    raw = client.chat.completions.with_raw_response.create(
        model="claude-anthropic", messages=ASK, reasoning_effort="low", temperature=0.2
    )
    assert "temperature" in raw.headers["x-multihome-dropped-params"]
    assert "temperature" not in _sent(stack, "claude-anthropic")


def test_a_forced_tool_call_with_reasoning_is_a_clear_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="claude-anthropic", messages=ASK, tools=TOOLS, tool_choice="required", reasoning_effort="high"
        )
    assert "thinking allows tool_choice 'auto' or 'none' only" in err.value.message


def test_bad_reasoning_input_is_a_clear_400(client):
    with pytest.raises(openai.BadRequestError, match="reasoning_effort"):
        client.chat.completions.create(model="claude-anthropic", messages=ASK, reasoning_effort="enormous")
    with pytest.raises(openai.BadRequestError, match="thinking blocks belong to assistant messages"):
        client.chat.completions.create(
            model="claude-anthropic",
            messages=[
                {
                    "role": "user",
                    "content": "hi",
                    "thinking_blocks": [{"type": "thinking", "thinking": "x", "signature": "y"}],
                }
            ],
        )


# -- Anthropic clients (the official anthropic SDK at the gateway's /v1/messages) ---------------

THINK = {"type": "enabled", "budget_tokens": 2048}
ANT_TOOLS = [{"name": "get_weather", "description": "w", "input_schema": {"type": "object", "properties": {}}}]


@pytest.fixture
def claude_client(stack, client) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack[1].url, api_key=CLIENT_KEY, max_retries=0, timeout=15)


@pytest.mark.parametrize("model", GROUPS)
def test_an_anthropic_clients_thinking_reaches_claude_exactly_and_round_trips(stack, claude_client, model):
    first = claude_client.messages.create(model=model, max_tokens=4096, thinking=THINK, messages=ASK, tools=ANT_TOOLS)
    assert _thinking_sent(stack, model)[0] == THINK  # the exact budget, not the effort's
    assert first.content[0].type == "thinking" and first.content[0].signature
    if model != "claude-converse":  # Claude's thinking count reaches an Anthropic client as Claude gave it
        assert 0 < first.usage.output_tokens_details.thinking_tokens < first.usage.output_tokens
    use = next(b for b in first.content if b.type == "tool_use")
    history = [
        *ASK,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
    ]
    second = claude_client.messages.create(
        model=model, max_tokens=4096, thinking=THINK, messages=history, tools=ANT_TOOLS
    )
    assert second.stop_reason == "end_turn"
    thinking = first.content[0]
    assert _replayed(stack, model) == {
        "type": "thinking",
        "thinking": thinking.thinking,
        "signature": thinking.signature,
    }


def test_an_anthropic_client_streams_thinking(claude_client):
    with claude_client.messages.stream(
        model="claude-anthropic", max_tokens=4096, thinking=THINK, messages=[{"role": "user", "content": "Hello there"}]
    ) as stream:
        kinds = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert {"thinking_delta", "signature_delta", "text_delta"} <= set(kinds)
    assert final.content[0].type == "thinking" and final.content[0].signature
    assert "Hello there" in final.content[0].thinking and "Hello there" in final.content[1].text


def test_an_anthropic_clients_budget_reaches_an_openai_upstream_as_an_effort(stack, claude_client):
    claude_client.messages.create(model="reasoner", max_tokens=4096, thinking=THINK, messages=ASK)
    sent = _sent(stack, "reasoner")
    assert sent["reasoning_effort"] == "medium" and "thinking" not in sent


def test_a_thinking_budget_an_anthropic_client_cannot_have_is_a_clear_400(claude_client):
    with pytest.raises(anthropic.BadRequestError, match="budget_tokens"):
        claude_client.messages.create(
            model="claude-anthropic", max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 4096}, messages=ASK
        )


def test_a_responses_calls_effort_reaches_claude_as_a_budget(stack, client):
    raw = client.responses.with_raw_response.create(
        model="claude-anthropic", input="Hello there", reasoning={"effort": "high", "summary": "auto"}, store=False
    )
    reply = raw.parse()
    assert "Hello there" in reply.output_text
    assert _sent(stack, "claude-anthropic")["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    # Claude's thinking text is the summary: a reasoning item first, nothing reported dropped.
    assert "reasoning" not in raw.headers.get("x-multihome-dropped-params", "")
    assert reply.output[0].type == "reasoning" and "Hello there" in reply.output[0].summary[0].text


# -- open-weight models on Converse: gpt-oss takes reasoning_effort, DeepSeek-R1 always reasons -----------


@pytest.mark.parametrize("model", ["gptoss-converse", "r1-converse"])
def test_open_weight_reasoning_on_converse(stack, client, model):
    raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO, reasoning_effort="high")
    reply = raw.parse()
    sent = _sent(stack, model)
    dropped = raw.headers.get("x-multihome-dropped-params", "")
    if model == "gptoss-converse":  # AWS: gpt-oss takes OpenAI's other chat fields in additionalModelRequestFields
        assert sent["additionalModelRequestFields"] == {"reasoning_effort": "high"} and "reasoning" not in dropped
    else:  # DeepSeek-R1 takes no reasoning setting: said so
        assert "additionalModelRequestFields" not in sent and "reasoning_effort" in dropped
    msg = reply.choices[0].message
    assert "Hello there" in msg.reasoning_content and "Hello there" in msg.content
    assert msg.thinking_blocks == [{"type": "thinking", "thinking": msg.reasoning_content, "signature": ""}]
    chunks = list(client.chat.completions.create(model=model, messages=HELLO, reasoning_effort="high", stream=True))
    streamed = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    assert streamed == msg.reasoning_content
    # Sent back, unsigned reasoning is not replayed (gpt-oss refuses a signature; R1 is not to be shown its own).
    again = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[
            *HELLO,
            {"role": "assistant", "content": msg.content, "thinking_blocks": msg.thinking_blocks},
            *HELLO,
        ],
    )
    assert "messages[].thinking_blocks" in again.headers["x-multihome-dropped-params"]
    assert all("reasoningContent" not in b for b in _sent(stack, model)["messages"][1]["content"])


HELLO = [{"role": "user", "content": "Hello there"}]


RESPONSES_TOOLS = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_a_responses_tool_loop_keeps_claudes_signed_thinking(stack, client, stream):
    """Claude requires the thinking block of the turn that called a tool back with its result: the
    reasoning item carries it (as its encrypted_content), so replaying the output items is enough."""
    ask = [{"role": "user", "content": "use get_weather"}]
    settings = {
        "model": "claude-anthropic",
        "tools": RESPONSES_TOOLS,
        "reasoning": {"effort": "medium"},
        "store": False,
    }
    if stream:
        events = list(client.responses.create(input=ask, stream=True, **settings))
        first = events[-1].response
    else:
        first = client.responses.create(input=ask, **settings)
    reasoning = first.output[0]
    assert reasoning.type == "reasoning" and reasoning.encrypted_content
    call = next(i for i in first.output if i.type == "function_call")
    replay = [*ask, *(i.model_dump(exclude_none=True) for i in first.output)]
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
    second = client.responses.create(input=[*replay, result], **settings)
    assert second.status == "completed" and second.output_text
    sent = _sent(stack, "claude-anthropic")["messages"][1]["content"][0]
    assert sent["type"] == "thinking" and sent["signature"]  # Claude's block, back unchanged
