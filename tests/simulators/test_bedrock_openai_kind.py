"""The bedrock_openai simulator (Bedrock's OpenAI-compatible Chat Completions endpoint), judged by
the official openai SDK's own Bedrock provider, `openai.providers.bedrock(endpoint="runtime")`,
which signs with SigV4 (service `bedrock`) or sends a Bedrock API key."""

from __future__ import annotations

import openai
import pytest
from openai.providers import bedrock

from multihome.simulators import SimulatorConfig, start_simulator_in_thread

AKID, SECRET, REGION = "AKIDOPENAICOMPAT", "openai-compat-secret", "us-west-2"
API_KEY = "ABSKbedrock-api-key-123"
MODEL = "openai.gpt-oss-120b-1:0"
HI = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def compat_sim():
    sim = start_simulator_in_thread(
        SimulatorConfig(
            kind="bedrock_openai",
            region=REGION,
            api_key=API_KEY,
            aws_access_key_id=AKID,
            aws_secret_access_key=SECRET,
        )
    )
    yield sim
    sim.close()


@pytest.fixture
def sim(compat_sim):
    compat_sim.reset()
    return compat_sim


def _sdk(sim, **auth) -> openai.OpenAI:
    provider = bedrock(endpoint="runtime", region=REGION, base_url=sim.url + "/openai/v1", **auth)
    return openai.OpenAI(provider=provider, max_retries=0, timeout=10)


@pytest.mark.parametrize(
    "auth",
    [{"access_key_id": AKID, "secret_access_key": SECRET}, {"api_key": API_KEY}],
    ids=["sigv4", "api-key"],
)
def test_chat_with_the_sdks_bedrock_provider(sim, auth):
    reply = _sdk(sim, **auth).chat.completions.create(model=MODEL, messages=HI)
    assert "Hello there" in reply.choices[0].message.content and reply.model == MODEL
    sent = sim.requests()
    assert [(r["path"], r["auth"]) for r in sent] == [("/openai/v1/chat/completions", True)]


def test_streaming_and_tools(sim):
    client = _sdk(sim, access_key_id=AKID, secret_access_key=SECRET)
    stream = client.chat.completions.create(
        model=MODEL, messages=HI, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "Hello there" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "use get_weather"}], tools=tools
    )
    assert reply.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    "auth",
    [{"access_key_id": AKID, "secret_access_key": "wrong"}, {"api_key": "ABSKnot-the-key"}],
    ids=["bad-signature", "bad-key"],
)
def test_wrong_credentials_are_refused(sim, auth):
    with pytest.raises(openai.PermissionDeniedError):
        _sdk(sim, **auth).chat.completions.create(model=MODEL, messages=HI)


def test_a_signature_for_another_region_is_refused(sim):
    provider = bedrock(
        endpoint="runtime",
        region="eu-west-1",
        base_url=sim.url + "/openai/v1",
        access_key_id=AKID,
        secret_access_key=SECRET,
    )
    with pytest.raises(openai.APIStatusError) as err:
        openai.OpenAI(provider=provider, max_retries=0, timeout=10).chat.completions.create(model=MODEL, messages=HI)
    assert err.value.status_code in (401, 403)


def test_other_operations_are_not_served(sim):
    with pytest.raises(openai.NotFoundError):
        _sdk(sim, api_key=API_KEY).embeddings.create(model=MODEL, input="x")


def test_a_request_it_cannot_take_gets_bedrocks_validation_error(sim):
    """Bedrock's code for a refused body is `validation_error` (observed), in OpenAI's envelope."""
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    with pytest.raises(openai.BadRequestError) as refused:
        _sdk(sim, api_key=API_KEY).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [image]}])
    assert refused.value.code == "validation_error" and refused.value.type == "invalid_request_error"
