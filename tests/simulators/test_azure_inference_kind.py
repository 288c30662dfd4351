"""The azure_inference simulator kind (Azure AI model inference: Foundry's model catalogue), judged
by the official azure-ai-inference SDK and by raw HTTP for what the SDK never sends."""

from __future__ import annotations

import httpx
import pytest
from azure.ai.inference import ChatCompletionsClient, EmbeddingsClient
from azure.core.credentials import AccessToken, AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from multihome.simulators import SimulatorConfig, start_simulator_in_thread

KEY = "inference-key-123"
TOKEN = "entra-token-inference"
MODEL = "Llama-3.3-70B-Instruct"
HI = [{"role": "user", "content": "Hello there"}]
Q = "?api-version=2024-05-01-preview"


class _Token:
    """A fixed Entra ID token (azure-core's TokenCredential protocol): the simulator checks its value."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        return AccessToken(self.token, 4102444800)


@pytest.fixture(scope="module")
def inference_sim():
    sim = start_simulator_in_thread(
        SimulatorConfig(
            kind="azure_inference",
            name="inference-sim",
            api_key=KEY,
            entra_token=TOKEN,
            deployments=[MODEL, "Cohere-embed-v3-english"],
        )
    )
    yield sim
    sim.close()


@pytest.fixture
def sim(inference_sim):
    inference_sim.reset()
    return inference_sim


def _chat(sim, credential) -> ChatCompletionsClient:
    return ChatCompletionsClient(endpoint=sim.url + "/models", credential=credential, retry_total=0)


def test_sdk_chat_with_a_key(sim):
    reply = _chat(sim, AzureKeyCredential(KEY)).complete(model=MODEL, messages=HI, temperature=0.2)
    assert "Hello there" in reply.choices[0].message.content
    assert reply.usage.prompt_tokens > 0
    assert [r["path"] for r in sim.requests()] == ["/models/chat/completions"]


def test_sdk_streams_with_an_entra_token(sim):
    client = _chat(sim, _Token(TOKEN))
    text = "".join(
        update.choices[0].delta.content or ""
        # azure-core refuses bearer tokens over plain http unless told; the simulator serves http.
        for update in client.complete(model=MODEL, messages=HI, stream=True, enforce_https=False)
        if update.choices
    )
    assert "Hello there" in text


def test_sdk_model_extras_go_through_as_pass_through(sim):
    # The SDK sets `extra-parameters: pass-through` itself when model_extras are given.
    reply = _chat(sim, AzureKeyCredential(KEY)).complete(model=MODEL, messages=HI, model_extras={"logprobs": True})
    assert reply.choices[0].message.content


@pytest.mark.parametrize("mode, status", [(None, 422), ("error", 422), ("drop", 200), ("pass-through", 200)])
def test_extra_parameters_follow_the_header(sim, mode, status):
    headers = {"api-key": KEY, **({"extra-parameters": mode} if mode else {})}
    body = {"model": MODEL, "messages": HI, "logprobs": True}
    r = httpx.post(sim.url + "/models/chat/completions" + Q, json=body, headers=headers)
    assert r.status_code == status
    if status == 422:
        assert "logprobs" in r.json()["error"]["message"]


def test_an_allowed_extra_parameter_is_not_cached_for_a_call_without_the_header(sim):
    body = {"model": MODEL, "messages": HI, "logprobs": True}
    url = sim.url + "/models/chat/completions" + Q
    assert httpx.post(url, json=body, headers={"api-key": KEY, "extra-parameters": "pass-through"}).status_code == 200
    assert httpx.post(url, json=body, headers={"api-key": KEY}).status_code == 422


def test_sdk_wrong_credentials_and_unknown_models(sim):
    with pytest.raises(ClientAuthenticationError):
        _chat(sim, AzureKeyCredential("wrong")).complete(model=MODEL, messages=HI)
    with pytest.raises(ClientAuthenticationError):
        _chat(sim, _Token("another-token")).complete(model=MODEL, messages=HI, enforce_https=False)
    with pytest.raises(HttpResponseError) as info:
        _chat(sim, AzureKeyCredential(KEY)).complete(model="no-such-model", messages=HI)
    assert info.value.status_code == 400 and "unknown_model" in str(info.value)


def test_sdk_embeddings(sim):
    client = EmbeddingsClient(endpoint=sim.url + "/models", credential=AzureKeyCredential(KEY), retry_total=0)
    result = client.embed(model="Cohere-embed-v3-english", input=["first", "second"])
    assert [d.index for d in result.data] == [0, 1] and len(result.data[0].embedding) > 0


@pytest.mark.parametrize(
    "headers, ok",
    [
        ({"api-key": KEY}, True),  # a Foundry resource
        ({"authorization": f"Bearer {KEY}"}, True),  # a serverless endpoint
        ({"api-key": KEY, "authorization": f"Bearer {KEY}"}, True),  # what the SDK sends
        ({"authorization": f"Bearer {TOKEN}"}, True),
        ({}, False),
        ({"api-key": ""}, False),
        ({"authorization": "Basic abc"}, False),
    ],
)
def test_credentials(sim, headers, ok):
    r = httpx.post(sim.url + "/models/chat/completions" + Q, json={"model": MODEL, "messages": HI}, headers=headers)
    assert (r.status_code == 200) == ok and (ok or r.status_code == 401)


def test_the_serverless_root_form_and_api_version(sim):
    h = {"api-key": KEY}
    assert httpx.post(sim.url + "/chat/completions" + Q, json={"model": MODEL, "messages": HI}, headers=h).is_success
    r = httpx.post(sim.url + "/models/chat/completions", json={"model": MODEL, "messages": HI}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["code"] == "MissingApiVersionParameter"
    assert httpx.post(sim.url + "/openai/v1/chat/completions" + Q, json={}, headers=h).status_code == 404
