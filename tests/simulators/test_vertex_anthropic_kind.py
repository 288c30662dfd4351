"""The vertex_anthropic simulator kind (Claude on Vertex AI), judged by the official anthropic SDK's
AnthropicVertex client signing in with google-auth's real service-account flow (a signed JWT
exchanged at the simulator's own token endpoint), and by raw HTTP for what the SDK never sends."""

from __future__ import annotations

import anthropic
import httpx
import pytest
from google.oauth2 import service_account

from google_sa import new_key, public_pem, service_account_info
from multihome.simulators import SimulatorConfig, start_simulator_in_thread

HI = [{"role": "user", "content": "Hello there"}]
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
TRUSTED = new_key()
MODEL = "claude-sonnet-4-5@20250929"


@pytest.fixture(scope="module")
def vertex_sim():
    sim = start_simulator_in_thread(
        SimulatorConfig(
            kind="vertex_anthropic",
            name="vertex-claude-sim",
            region="us-east5",
            google_public_key=public_pem(TRUSTED),
            deployments={MODEL: "claude-sonnet-4-5-20250929"},
        )
    )
    yield sim
    sim.close()


@pytest.fixture
def sim(vertex_sim):
    vertex_sim.reset()
    return vertex_sim


def _credentials(sim, key=TRUSTED) -> service_account.Credentials:
    return service_account.Credentials.from_service_account_info(
        service_account_info(key, sim.url + "/token"), scopes=SCOPES
    )


def _sdk(sim, region="us-east5", **auth) -> anthropic.AnthropicVertex:
    if not auth:
        auth = {"credentials": _credentials(sim)}
    return anthropic.AnthropicVertex(
        region=region, project_id="proj-1", base_url=sim.url + "/v1", max_retries=0, timeout=10, **auth
    )


def test_sdk_signs_in_through_the_token_endpoint_and_gets_a_message(sim):
    grants = sim.sim.app.token_grants
    msg = _sdk(sim).messages.create(model=MODEL, max_tokens=50, messages=HI)
    assert msg.content[0].type == "text" and "Hello there" in msg.content[0].text
    assert msg.model == "claude-sonnet-4-5-20250929"
    paths = [r["path"] for r in sim.requests()]
    assert paths == [f"/v1/projects/proj-1/locations/us-east5/publishers/anthropic/models/{MODEL}:rawPredict"]
    assert sim.sim.app.token_grants == grants + 1


def test_sdk_streams_through_stream_raw_predict(sim):
    with _sdk(sim).messages.stream(model=MODEL, max_tokens=50, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "Hello there" in text and final.stop_reason == "end_turn"
    assert sim.requests()[-1]["path"].endswith(":streamRawPredict")


def test_sdk_tools_round_trip(sim):
    tools = [{"name": "get_weather", "description": "w", "input_schema": {"type": "object", "properties": {}}}]
    msg = _sdk(sim).messages.create(
        model=MODEL, max_tokens=200, messages=[{"role": "user", "content": "use get_weather"}], tools=tools
    )
    assert msg.stop_reason == "tool_use" and any(b.type == "tool_use" for b in msg.content)


def test_a_jwt_signed_by_an_untrusted_key_gets_no_token(sim):
    from google.auth.exceptions import RefreshError

    grants = sim.sim.app.token_grants
    with pytest.raises(RefreshError, match="Invalid JWT Signature"):
        _sdk(sim, credentials=_credentials(sim, new_key())).messages.create(model=MODEL, max_tokens=5, messages=HI)
    assert sim.sim.app.token_grants == grants and sim.requests() == []


def test_a_made_up_bearer_token_is_401_in_googles_envelope(sim):
    with pytest.raises(anthropic.AuthenticationError) as err:
        _sdk(sim, access_token="ya29.made-up").messages.create(model=MODEL, max_tokens=5, messages=HI)
    assert err.value.body == {
        "error": {"code": 401, "message": err.value.body["error"]["message"], "status": "UNAUTHENTICATED"}
    }


def test_unknown_model_is_404(sim):
    with pytest.raises(anthropic.NotFoundError):
        _sdk(sim).messages.create(model="claude-nope@1", max_tokens=5, messages=HI)


def test_a_location_this_endpoint_does_not_serve_is_refused(sim):
    with pytest.raises(
        anthropic.BadRequestError,
        match="The provided location ID doesn't match the endpoint. The valid location ID is `us-east5`",
    ):
        _sdk(sim, region="europe-west1").messages.create(model=MODEL, max_tokens=5, messages=HI)


def _token(sim) -> str:
    creds = _credentials(sim)
    import google.auth.transport.requests

    creds.refresh(google.auth.transport.requests.Request())
    return creds.token


def _raw(sim, body: dict, method: str = "rawPredict", token: str | None = None) -> httpx.Response:
    url = f"{sim.url}/v1/projects/proj-1/locations/us-east5/publishers/anthropic/models/{MODEL}:{method}"
    return httpx.post(url, json=body, headers={"authorization": f"Bearer {token or _token(sim)}"}, timeout=10)


@pytest.mark.parametrize(
    "body, message",
    [
        ({"model": MODEL}, "model: Extra inputs are not permitted"),
        ({"anthropic_version": "2023-06-01"}, "anthropic_version: Input should be 'vertex-2023-10-16'"),
        ({"anthropic_version": None}, "anthropic_version: Field required"),
        ({"stream": True}, "streaming request goes to :streamRawPredict"),
    ],
)
def test_what_the_sdk_never_sends_is_refused_in_anthropics_envelope(sim, body, message):
    full = {"anthropic_version": "vertex-2023-10-16", "max_tokens": 5, "messages": HI, **body}
    if full["anthropic_version"] is None:
        del full["anthropic_version"]
    r = _raw(sim, full)
    assert r.status_code == 400
    assert r.json()["type"] == "error" and message in r.json()["error"]["message"]


def test_the_token_endpoint_refuses_a_wrong_grant(sim):
    r = httpx.post(sim.url + "/token", data={"grant_type": "client_credentials", "assertion": "x"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = httpx.post(
        sim.url + "/token", data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "a.b"}
    )
    assert r.status_code == 400


def test_throttling_is_googles_429(sim):
    with pytest.raises(anthropic.RateLimitError) as err:
        client = _sdk(sim)
        client.messages.create(model=MODEL, max_tokens=5, messages=HI, extra_headers={"x-sim-fault": "throttle=1"})
    assert err.value.body["error"]["status"] == "RESOURCE_EXHAUSTED"
