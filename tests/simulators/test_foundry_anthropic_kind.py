"""The foundry_anthropic simulator kind (Claude on Microsoft Foundry), judged by the official
anthropic SDK's AnthropicFoundry client and by raw HTTP for what the SDK never sends."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from multihome.simulators import SimulatorConfig, start_simulator_in_thread

KEY = "foundry-azure-key-123"
TOKEN = "entra-token-for-foundry"
HI = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def foundry_sim():
    sim = start_simulator_in_thread(
        SimulatorConfig(
            kind="foundry_anthropic",
            name="foundry-sim",
            api_key=KEY,
            entra_token=TOKEN,
            deployments={"claude-sonnet-4-5": "claude-sonnet-4-5-20250929"},
        )
    )
    yield sim
    sim.close()


@pytest.fixture
def sim(foundry_sim):
    foundry_sim.reset()
    return foundry_sim


def _sdk(sim, **auth) -> anthropic.AnthropicFoundry:
    # base_url, not resource=: the resource form would name https://<resource>.services.ai.azure.com.
    return anthropic.AnthropicFoundry(base_url=sim.url + "/anthropic/", max_retries=0, timeout=10, **auth)


def test_sdk_with_an_azure_key(sim):
    msg = _sdk(sim, api_key=KEY).messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=HI)
    assert msg.content[0].type == "text" and "Hello there" in msg.content[0].text
    assert msg.model == "claude-sonnet-4-5-20250929"  # the deployment's model, as Foundry reports it
    assert [r["path"] for r in sim.requests()] == ["/anthropic/v1/messages"]


def test_sdk_with_an_entra_token_streams(sim):
    client = _sdk(sim, azure_ad_token_provider=lambda: TOKEN)
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=50, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "Hello there" in text and final.stop_reason == "end_turn"


def test_sdk_wrong_credentials_are_401(sim):
    with pytest.raises(anthropic.AuthenticationError):
        _sdk(sim, api_key="not-the-key").messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=HI)
    with pytest.raises(anthropic.AuthenticationError):
        _sdk(sim, azure_ad_token_provider=lambda: "other-token").messages.create(
            model="claude-sonnet-4-5", max_tokens=5, messages=HI
        )


def test_sdk_unknown_deployment_is_404(sim):
    with pytest.raises(anthropic.NotFoundError):
        _sdk(sim, api_key=KEY).messages.create(model="no-such-deployment", max_tokens=5, messages=HI)


def _post(sim, headers: dict, path: str = "/anthropic/v1/messages") -> httpx.Response:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": HI}
    return httpx.post(sim.url + path, json=body, headers={"anthropic-version": "2023-06-01", **headers}, timeout=10)


@pytest.mark.parametrize("header", ["x-api-key", "api-key"])
def test_either_key_header_is_accepted(sim, header):
    assert _post(sim, {header: KEY}).status_code == 200


@pytest.mark.parametrize(
    "headers, code",
    [
        ({}, "401"),
        ({"x-api-key": KEY, "authorization": f"Bearer {TOKEN}"}, "401"),
        ({"x-api-key": KEY, "api-key": "another"}, "401"),
        ({"authorization": "Basic abc"}, "PermissionDenied"),
    ],
)
def test_credentials_are_checked_in_azures_envelope(sim, headers, code):
    r = _post(sim, headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def test_anthropic_version_is_required(sim):
    r = httpx.post(
        sim.url + "/anthropic/v1/messages",
        json={"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": HI},
        headers={"x-api-key": KEY},
        timeout=10,
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_only_the_messages_call_is_served(sim):
    assert _post(sim, {"x-api-key": KEY}, path="/v1/messages").status_code == 404
    r = httpx.get(sim.url + "/anthropic/v1/models", headers={"x-api-key": KEY}, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "404"
