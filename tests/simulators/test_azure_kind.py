"""The azure kind: classic and v1 URLs, auth, Azure extras and the empty first stream chunk."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from .sim_helpers import AZURE_KEY

USER = [{"role": "user", "content": "Hello Azure"}]
CLASSIC = "/openai/deployments/{d}/chat/completions?api-version=2024-10-21"


def test_classic_chat_with_extras(aclient):
    raw = aclient.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    assert raw.http_request.url.path == "/openai/deployments/gpt-4o/chat/completions"
    assert raw.http_request.url.params["api-version"] == "2024-10-21"
    assert raw.headers["x-ms-region"] == "westeurope"
    assert raw.headers["x-ms-deployment-name"] == "gpt-4o"
    assert len(raw.headers["apim-request-id"]) == 36
    r = raw.parse()
    assert r.model == "gpt-4o-2024-08-06"  # the deployment's model, as Azure reports it
    assert r.choices[0].message.content == "Hello from azure-sim. You said: Hello Azure"
    body = raw.http_response.json()
    pfr = body["prompt_filter_results"]
    assert pfr[0]["prompt_index"] == 0
    assert pfr[0]["content_filter_results"]["hate"] == {"filtered": False, "severity": "safe"}
    cfr = body["choices"][0]["content_filter_results"]
    assert all(cfr[k] == {"filtered": False, "severity": "safe"} for k in ("hate", "sexual", "violence", "self_harm"))


def test_classic_stream_first_chunk_quirk(aclient, asim):
    chunks = list(
        aclient.chat.completions.create(
            model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    first = chunks[0]
    assert first.choices == [] and first.id == "" and first.created == 0 and first.model == ""
    assert first.prompt_filter_results[0]["prompt_index"] == 0  # type: ignore[attr-defined]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from azure-sim. You said: Hello Azure"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    # Raw level: per-choice filter results ride on the content chunks.
    r = httpx.post(
        asim.url + CLASSIC.format(d="gpt-4o"), json={"messages": USER, "stream": True}, headers={"api-key": AZURE_KEY}
    )
    events = [e[len("data: ") :] for e in r.text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    content = [json.loads(e) for e in events[1:-1]]
    assert content[1]["choices"][0]["content_filter_results"]["violence"]["severity"] == "safe"


def test_classic_embeddings(aclient):
    r = aclient.embeddings.create(model="embed", input=["a", "b", "c"], encoding_format="float")
    assert len(r.data) == 3 and r.model == "text-embedding-3-small"


def test_v1_form_with_plain_openai_client(asim):
    c = openai.OpenAI(base_url=asim.url + "/openai/v1/", api_key=AZURE_KEY, max_retries=0)
    r = c.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert r.choices[0].message.content.startswith("Hello from azure-sim")
    assert {m.id for m in c.models.list()} == {"gpt-4o", "embed", "gpt-4o-mini"}
    assert len(c.embeddings.create(model="embed", input="x", encoding_format="float").data[0].embedding) == 8
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="nope", messages=USER)
    assert e.value.body["code"] == "DeploymentNotFound"
    log = asim.requests()
    assert log[0]["path"] == "/openai/v1/chat/completions" and log[0]["api_version"] is None


def test_v1_form_with_api_key_header(asim):
    # api-key header instead of bearer: send it explicitly and make the SDK omit Authorization.
    r = httpx.post(
        asim.url + "/openai/v1/chat/completions",
        json={"model": "gpt-4o", "messages": USER},
        headers={"api-key": AZURE_KEY},
    )
    assert r.status_code == 200 and r.json()["model"] == "gpt-4o-2024-08-06"


def test_missing_api_version_is_400(asim):
    r = httpx.post(
        asim.url + "/openai/deployments/gpt-4o/chat/completions",
        json={"messages": USER},
        headers={"api-key": AZURE_KEY},
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "MissingApiVersionParameter" and "api-version" in err["message"]
    assert set(err) == {"code", "message"}
    r = httpx.post(
        asim.url + "/openai/deployments/gpt-4o/chat/completions?api-version=latest",
        json={"messages": USER},
        headers={"api-key": AZURE_KEY},
    )
    assert r.status_code == 400


def test_unknown_deployment_404(aclient):
    with pytest.raises(openai.NotFoundError) as e:
        aclient.chat.completions.create(model="gpt-9", messages=USER)
    assert e.value.body["code"] == "DeploymentNotFound"


def test_auth(asim):
    url = asim.url + CLASSIC.format(d="gpt-4o")
    body = {"messages": USER}
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, headers={"api-key": "wrong"}).status_code == 401
    both = httpx.post(url, json=body, headers={"api-key": AZURE_KEY, "Authorization": "Bearer t"})
    assert both.status_code == 401
    assert httpx.post(url, json=body, headers={"Authorization": "Basic abc"}).status_code == 401
    # Any non-empty Entra token is fine when no entra_token is configured.
    ad = openai.AzureOpenAI(
        azure_endpoint=asim.url, api_version="2024-10-21", azure_ad_token="eyJ.token", max_retries=0
    )
    assert ad.chat.completions.create(model="gpt-4o", messages=USER).choices
    log = asim.requests()
    assert [e["outcome"] for e in log] == ["error:401"] * 4 + ["ok"]
    assert [e["auth"] for e in log] == [False, True, True, True, True]
    assert AZURE_KEY not in json.dumps(log) and "eyJ.token" not in json.dumps(log)
    err = httpx.post(url, json=body, headers={"api-key": "wrong"}).json()["error"]
    assert err["code"] == "401" and "message" in err


def test_entra_token_must_match_when_configured():
    from multihome.simulators import SimulatorConfig, start_simulator_in_thread

    with start_simulator_in_thread(SimulatorConfig(kind="azure", name="az", entra_token="good-token")) as sim:
        ok = openai.AzureOpenAI(
            azure_endpoint=sim.url, api_version="2024-10-21", azure_ad_token="good-token", max_retries=0
        )
        assert ok.chat.completions.create(model="anything", messages=USER).model == "anything"
        bad = openai.AzureOpenAI(azure_endpoint=sim.url, api_version="2024-10-21", azure_ad_token="bad", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="anything", messages=USER)
        # Without a configured api_key any non-empty key passes.
        key = openai.AzureOpenAI(azure_endpoint=sim.url, api_version="2024-10-21", api_key="whatever", max_retries=0)
        assert key.chat.completions.create(model="x", messages=USER).choices


def test_azure_validation_error_shape(asim):
    r = httpx.post(asim.url + CLASSIC.format(d="gpt-4o"), json={"messages": []}, headers={"api-key": AZURE_KEY})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "messages" and err["code"] == "empty_array" and err["message"]
