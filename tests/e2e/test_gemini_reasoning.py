"""Gemini thoughts across the front doors, end to end: the official openai and anthropic SDKs -> the real
gateway -> the gemini and vertex simulators (which think, count and sign as Google documents).

The client's reasoning settings become `thinkingConfig`; thought parts come back as `reasoning_content`
(chat), a reasoning item (Responses) or a thinking block (Anthropic); a Gemini 3 function call's
thought signature travels as `extra_content.google.thought_signature` and goes back unchanged (the
simulator refuses the turn otherwise); thoughtsTokenCount is billed as output and reported as
reasoning tokens, in the answer and in the usage rows (an OpenAI reasoning model's
`reasoning_tokens`, chat and native Responses, are recorded the same way).
"""

from __future__ import annotations

import json
from decimal import Decimal

import anthropic
import httpx
import openai
import pytest

from builders import api_keys, config, deployment, group, identity, price, simulated, sqlite

from .processes import Gateway, Simulators
from .stores import head_database
from .test_gemini import SECRETS, service_account  # noqa: F401 (a fixture, used by name)
from .test_gemini import TOOLS as GEMINI_TOOLS

CLIENT_KEY = SECRETS["MH_GEM_CLIENT_KEY"]
ADMIN_KEY = "mh-gemini-reasoning-admin"
IN, OUT = Decimal(1), Decimal(10)  # per 1M tokens: output ten times input, so thoughts left out would show
TOOLS = GEMINI_TOOLS[:1]  # get_weather
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
KINDS = ["gem", "vtx"]


@pytest.fixture(scope="module")
def sims():
    with Simulators() as started:
        yield {
            "gem": started.start("gemini", "gemini-sim", key_env="MH_GEM_KEY", env=SECRETS),
            "vtx": started.start("vertex", "vertex-sim", key_env="SIM_VERTEX_TOKEN", region="us-central1", env=SECRETS),
            "openai": started.start("openai", "openai-sim"),
        }


@pytest.fixture(scope="module")
def gateway(request, sims, service_account, tmp_path_factory):  # noqa: F811 (the fixture imported above)
    tmp = tmp_path_factory.mktemp("gemini-reasoning")
    head_database(request, "sqlite", tmp, "mh.db")  # the config's file, at the head revision
    vertex_auth = {"google": {"service_account_file_env": "MH_GEM_SA_FILE"}}
    cfg = config(
        server=api_keys("MH_GEM_CLIENT_KEY"),
        identity=identity("MH_ADMIN_KEY"),
        storage=sqlite(tmp / "mh.db"),
        providers={
            "gemini": simulated("gemini", sims["gem"].url, key_env="MH_GEM_KEY"),
            "vertex": simulated("vertex", sims["vtx"].url, region="us-central1", project="proj-1", auth=vertex_auth),
            "openai": simulated("openai", sims["openai"].url),
        },
        deployments={
            "gem-main": deployment("gemini", "gemini-2.5-flash", price=price(IN, OUT)),
            "vtx-main": deployment("vertex", "gemini-2.5-pro", price=price(IN, OUT)),
            "gem-3": deployment("gemini", "gemini-3-pro-preview", price=price(IN, OUT)),
            "o4-main": deployment("openai", "o4-mini", price=price(IN, OUT)),
        },
        model_groups={
            "gem": group("gem-main", retries=0),
            "vtx": group("vtx-main", retries=0),
            "gem3": group("gem-3", retries=0),
            "o4": group("o4-main", retries=0),
        },
    )
    env = {**SECRETS, "MH_GEM_SA_FILE": str(service_account), "MH_ADMIN_KEY": ADMIN_KEY}
    gw = Gateway(cfg, tmp, env)
    yield gw
    log = gw.stop()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture
def client(gateway, sims) -> openai.OpenAI:
    for sim in sims.values():
        sim.reset()
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=15)


def _sent(sims, model: str) -> dict:
    return json.loads(sims["vtx" if model == "vtx" else "gem"].requests()[-1]["body"])


# -- chat ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", KINDS)
def test_effort_becomes_a_thinking_budget_and_thoughts_come_back_as_reasoning(client, sims, model):
    reply = client.chat.completions.create(model=model, messages=ASK, reasoning_effort="low")
    assert _sent(sims, model)["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024, "includeThoughts": True}
    msg = reply.choices[0].message
    assert "What is the weather in Paris?" in msg.reasoning_content  # the thought summary
    assert "The user asked" not in msg.content  # thoughts are not the answer
    u = reply.usage
    assert u.completion_tokens_details.reasoning_tokens > 0
    assert u.completion_tokens > u.completion_tokens_details.reasoning_tokens  # thoughts are inside completion
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


@pytest.mark.parametrize("model", KINDS)
def test_a_stream_carries_thoughts_first_and_counts_them(client, model):
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=ASK,
            reasoning_effort="medium",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    kinds = [
        "reasoning" if getattr(c.choices[0].delta, "reasoning_content", None) else "text"
        for c in chunks
        if c.choices and (c.choices[0].delta.content or getattr(c.choices[0].delta, "reasoning_content", None))
    ]
    assert kinds[0] == "reasoning" and kinds[-1] == "text" and kinds == sorted(kinds)  # "reasoning" < "text"
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens > 0


def test_without_reasoning_settings_nothing_is_asked(client, sims):
    reply = client.chat.completions.create(model="gem", messages=ASK)
    assert "thinkingConfig" not in _sent(sims, "gem").get("generationConfig", {})
    assert getattr(reply.choices[0].message, "reasoning_content", None) is None
    assert reply.usage.completion_tokens_details is None


def test_gemini_3_signature_goes_back_with_its_call(client, sims):
    first = client.chat.completions.create(model="gem3", messages=ASK, tools=TOOLS, reasoning_effort="high")
    assert _sent(sims, "gem3")["generationConfig"]["thinkingConfig"] == {
        "thinkingLevel": "high",
        "includeThoughts": True,
    }
    call = first.choices[0].message.tool_calls[0]
    signature = call.model_extra["extra_content"]["google"]["thought_signature"]
    assert signature and first.usage.completion_tokens_details.reasoning_tokens > 0
    result = {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}
    history = [*ASK, {"role": "assistant", "tool_calls": [call.model_dump()]}, result]
    answer = client.chat.completions.create(model="gem3", messages=history, tools=TOOLS)
    assert answer.choices[0].finish_reason == "stop"
    replayed = _sent(sims, "gem3")["contents"][1]["parts"][0]
    assert replayed["thoughtSignature"] == signature  # byte for byte

    altered = {**call.model_dump(), "extra_content": {"google": {"thought_signature": "AAAA" + signature[4:]}}}
    with pytest.raises(openai.BadRequestError, match="thought signature"):
        client.chat.completions.create(
            model="gem3", messages=[*ASK, {"role": "assistant", "tool_calls": [altered]}, result], tools=TOOLS
        )
    # A call Gemini did not sign (another model wrote the history): Google's documented stand-in.
    unsigned = {k: v for k, v in call.model_dump().items() if k != "extra_content"}
    client.chat.completions.create(
        model="gem3", messages=[*ASK, {"role": "assistant", "tool_calls": [unsigned]}, result], tools=TOOLS
    )
    assert _sent(sims, "gem3")["contents"][1]["parts"][0]["thoughtSignature"] == "skip_thought_signature_validator"


# -- Responses and Anthropic front doors -------------------------------------------------------------


@pytest.mark.parametrize("model", KINDS)
def test_responses_reasoning_item_with_a_summary(client, sims, model):
    raw = client.responses.with_raw_response.create(
        model=model, input="Why is the sky blue?", reasoning={"effort": "high", "summary": "auto"}, store=False
    )
    reply = raw.parse()
    assert _sent(sims, model)["generationConfig"]["thinkingConfig"] == {
        "thinkingBudget": 24576,
        "includeThoughts": True,
    }
    assert "reasoning" not in raw.headers.get("x-multihome-dropped-params", "")
    first = reply.output[0]
    assert first.type == "reasoning" and "Why is the sky blue?" in first.summary[0].text
    assert reply.output[1].type == "message" and "The user asked" not in reply.output_text
    assert reply.usage.output_tokens_details.reasoning_tokens > 0


def test_responses_stream_reasoning_summary_events(client):
    events = list(
        client.responses.create(
            model="gem", input="Hello there", reasoning={"effort": "low", "summary": "auto"}, stream=True, store=False
        )
    )
    kinds = [e.type for e in events]
    assert kinds.index("response.reasoning_summary_text.delta") < kinds.index("response.output_text.delta")
    final = events[-1].response
    assert final.output[0].type == "reasoning" and final.output[0].summary[0].text
    assert final.usage.output_tokens_details.reasoning_tokens > 0


def test_an_anthropic_client_gets_gemini_thoughts_as_an_unsigned_thinking_block(gateway, client, sims):
    claude = anthropic.Anthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0, timeout=15)
    reply = claude.messages.create(
        model="gem",
        max_tokens=8192,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[{"role": "user", "content": "Hello there"}],
    )
    assert _sent(sims, "gem")["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 2048, "includeThoughts": True}
    thought = reply.content[0]
    assert thought.type == "thinking" and "Hello there" in thought.thinking and thought.signature == ""
    assert reply.content[1].type == "text"
    # Gemini's thoughtsTokenCount, as Anthropic names the thinking part of output_tokens.
    assert 0 < reply.usage.output_tokens_details.thinking_tokens < reply.usage.output_tokens


@pytest.mark.parametrize(
    ("block", "missing"),
    [
        ({"type": "thinking", "signature": ""}, "thinking"),
        ({"type": "thinking", "thinking": "I thought"}, "signature"),
        ({"type": "redacted_thinking"}, "data"),
    ],
)
def test_an_anthropic_thinking_block_missing_a_field_is_a_400_naming_it(gateway, block, missing):
    """As Anthropic's API answers it, whatever the upstream: not silently dropped (nor, for Claude, sent on
    without the block and refused for a reason the client cannot see), and in Anthropic's error format."""
    claude = anthropic.Anthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0, timeout=15)
    history = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": [block, {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]},
    ]
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    with pytest.raises(anthropic.BadRequestError) as raised:
        claude.messages.create(model="gem", max_tokens=4096, messages=history, tools=tools)  # type: ignore[arg-type]
    assert raised.value.body["type"] == "error"
    assert f"messages.1.content.0.{missing}" in raised.value.body["error"]["message"]


# -- metering: thoughts are billed as output and recorded as reasoning tokens ------------------------


def test_thoughts_are_billed_as_output_and_recorded(gateway, client, sims):
    reply = client.chat.completions.create(model="gem", messages=ASK, reasoning_effort="low")
    # What Google answered the gateway: the same request sent again (the simulator answers alike).
    sent = sims["gem"].requests()[-1]
    direct = httpx.post(
        sims["gem"].url + sent["path"], content=sent["body"], headers={"x-goog-api-key": SECRETS["MH_GEM_KEY"]}
    )
    meta = direct.json()["usageMetadata"]
    # The money check: what Google bills as output is candidates + thoughts.
    assert reply.usage.completion_tokens == meta["candidatesTokenCount"] + meta["thoughtsTokenCount"]
    admin = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    rows = admin.get("/admin/v1/usage", params={"group_by": "deployment"}).json()["data"]
    gem = next(r for r in rows if r["deployment"] == "gem-main")
    assert gem["reasoning_tokens"] >= meta["thoughtsTokenCount"] > 0
    # Every gem-main call so far: its cost is prompt at input, completion (thoughts included) at output.
    expected = (gem["prompt_tokens"] * IN + gem["completion_tokens"] * OUT) / 1_000_000
    assert Decimal(gem["cost"]) == expected
    assert gem["completion_tokens"] >= gem["reasoning_tokens"]


def test_an_openai_reasoning_models_tokens_are_recorded(gateway, client):
    """OpenAI reports reasoning inside completion_tokens and names it: recorded as is, chat and native Responses."""
    chat = client.chat.completions.create(model="o4", messages=ASK, reasoning_effort="high")
    reasoning = chat.usage.completion_tokens_details.reasoning_tokens
    assert 0 < reasoning < chat.usage.completion_tokens
    native = client.responses.create(model="o4", input="Hello there", reasoning={"effort": "low"}, store=False)
    assert native.usage.output_tokens_details.reasoning_tokens > 0
    admin = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    rows = admin.get("/admin/v1/usage", params={"group_by": "deployment"}).json()["data"]
    o4 = next(r for r in rows if r["deployment"] == "o4-main")
    assert o4["reasoning_tokens"] == reasoning + native.usage.output_tokens_details.reasoning_tokens
    assert o4["completion_tokens"] == chat.usage.completion_tokens + native.usage.output_tokens


def test_a_streamed_gemini_3_call_carries_its_signature(client, sims):
    chunks = list(client.chat.completions.create(model="gem3", messages=ASK, tools=TOOLS, stream=True))
    starts = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or () if tc.id]
    [start] = starts
    signature = start.model_extra["extra_content"]["google"]["thought_signature"]
    unary = client.chat.completions.create(model="gem3", messages=ASK, tools=TOOLS)
    assert (
        signature == unary.choices[0].message.tool_calls[0].model_extra["extra_content"]["google"]["thought_signature"]
    )


def test_the_usage_report_shows_reasoning_tokens(gateway, client, capsys, monkeypatch):
    """`multihome usage`: reasoning tokens in their own column, beside the output tokens that hold them."""
    from multihome.cli import main

    client.chat.completions.create(model="gem", messages=ASK, reasoning_effort="low")
    monkeypatch.setenv("MULTIHOME_URL", gateway.url)
    monkeypatch.setenv("MULTIHOME_ADMIN_KEY", ADMIN_KEY)
    capsys.readouterr()
    assert main(["usage", "--by", "deployment"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if "OUTPUT TOKENS" in line)
    assert "OUTPUT TOKENS  OF WHICH REASONING" in header
    # deployment, calls, errors, unserved, input tokens, output tokens, of which reasoning, cost
    row = next(line for line in lines if line.startswith("gem-main")).split()
    assert 0 < int(row[6]) < int(row[5])


def test_the_sdks_max_effort_is_the_largest_thinking_setting(client, sims):
    """`max` (OpenAI's ReasoningEffort, the openai SDK's Literal) is served like `xhigh`: Gemini's largest."""
    client.chat.completions.create(model="gem", messages=ASK, reasoning_effort="max")
    assert _sent(sims, "gem")["generationConfig"]["thinkingConfig"] == {
        "thinkingBudget": 24576,
        "includeThoughts": True,
    }
    client.chat.completions.create(model="gem3", messages=ASK, reasoning_effort="max")
    assert _sent(sims, "gem3")["generationConfig"]["thinkingConfig"]["thinkingLevel"] == "high"
