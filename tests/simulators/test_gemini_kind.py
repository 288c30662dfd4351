"""The `gemini` and `vertex` simulator kinds: Google's routes, auth, bodies, SSE framing and faults."""

from __future__ import annotations

import json

import httpx
import pytest

from multihome.simulators import SimulatorConfig, start_simulator_in_thread

KEY = "gemini-test-key"
TOKEN = "ya29.vertex-test-token"
USER = {"contents": [{"role": "user", "parts": [{"text": "Hello there"}]}]}
TOOLS = [
    {
        "functionDeclarations": [
            {
                "name": "get_weather",
                "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
            {"name": "get_time", "parameters": {"type": "OBJECT", "properties": {"tz": {"type": "STRING"}}}},
        ]
    }
]


@pytest.fixture(scope="module")
def gemini_sim():
    sim = start_simulator_in_thread(SimulatorConfig(kind="gemini", name="gem", api_key=KEY))
    yield sim
    sim.close()


@pytest.fixture(scope="module")
def vertex_sim():
    sim = start_simulator_in_thread(SimulatorConfig(kind="vertex", name="vtx", oauth_token=TOKEN, region="us-central1"))
    yield sim
    sim.close()


@pytest.fixture
def gsim(gemini_sim):
    gemini_sim.reset()
    return gemini_sim


@pytest.fixture
def vsim(vertex_sim):
    vertex_sim.reset()
    return vertex_sim


def gpost(
    sim,
    method: str,
    body: dict,
    model: str = "gemini-2.5-flash",
    fault: str | None = None,
    key: str | None = KEY,
    query: str = "",
) -> httpx.Response:
    headers = {"x-goog-api-key": key} if key else {}
    if fault:
        headers["x-sim-fault"] = fault
    return httpx.post(f"{sim.url}/v1beta/models/{model}:{method}{query}", json=body, headers=headers, timeout=5)


def events(resp: httpx.Response) -> list[dict]:
    assert resp.headers["content-type"].startswith("text/event-stream")
    raw = resp.content
    assert raw.endswith(b"\r\n\r\n") and b"[DONE]" not in raw
    return [json.loads(e[len(b"data: ") :]) for e in raw.split(b"\r\n\r\n") if e]


def test_generate_content_text_reply_and_usage(gsim):
    r = gpost(gsim, "generateContent", {**USER, "systemInstruction": {"parts": [{"text": "be brief"}]}})
    assert r.status_code == 200
    body = r.json()
    cand = body["candidates"][0]
    assert cand["content"]["role"] == "model" and cand["finishReason"] == "STOP"
    assert cand["content"]["parts"][0]["text"] == "Hello from gem. You said: Hello there"
    usage = body["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]


@pytest.mark.parametrize(
    "key,status,google_status", [(None, 403, "PERMISSION_DENIED"), ("wrong", 400, "INVALID_ARGUMENT")]
)
def test_gemini_api_key_is_checked(gsim, key, status, google_status):
    r = gpost(gsim, "generateContent", USER, key=key)
    assert r.status_code == status
    assert r.json()["error"]["status"] == google_status and r.json()["error"]["code"] == status


def test_stream_is_sse_with_crlf_framing_and_no_sentinel(gsim):
    r = gpost(gsim, "streamGenerateContent", USER, query="?alt=sse")
    chunks = events(r)
    assert len(chunks) > 2
    assert (
        "".join(p.get("text", "") for c in chunks for p in c["candidates"][0].get("content", {}).get("parts", []))
        == "Hello from gem. You said: Hello there"
    )
    assert [c["candidates"][0].get("finishReason") for c in chunks][-1] == "STOP"
    assert "candidatesTokenCount" in chunks[-1]["usageMetadata"]


def test_stream_without_alt_sse_is_one_json_array(gsim):
    r = gpost(gsim, "streamGenerateContent", USER)
    assert isinstance(r.json(), list) and r.json()[-1]["candidates"][0]["finishReason"] == "STOP"


def test_parallel_function_calls_and_tool_config(gsim):
    r = gpost(
        gsim,
        "generateContent",
        {"contents": [{"role": "user", "parts": [{"text": "do it in parallel"}]}], "tools": TOOLS},
    )
    parts = r.json()["candidates"][0]["content"]["parts"]
    assert [p["functionCall"]["name"] for p in parts] == ["get_weather", "get_time"]
    assert parts[1]["functionCall"]["args"] == {"tz": "example"}  # OpenAPI-typed parameters understood
    named = gpost(
        gsim,
        "generateContent",
        {
            **USER,
            "tools": TOOLS,
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}},
        },
    )
    assert [p["functionCall"]["name"] for p in named.json()["candidates"][0]["content"]["parts"]] == ["get_time"]
    none = gpost(
        gsim, "generateContent", {**USER, "tools": TOOLS, "toolConfig": {"functionCallingConfig": {"mode": "NONE"}}}
    )
    assert "text" in none.json()["candidates"][0]["content"]["parts"][0]


def test_function_response_turn_is_validated_like_google(gsim):
    call = {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]}
    ok = gpost(
        gsim,
        "generateContent",
        {
            "contents": [
                USER["contents"][0],
                call,
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 3}}}]},
            ],
            "tools": TOOLS,
        },
    )
    assert ok.json()["candidates"][0]["content"]["parts"][0]["text"] == 'Tool get_weather returned: {"temp":3}'
    wrong_count = gpost(
        gsim,
        "generateContent",
        {
            "contents": [
                USER["contents"][0],
                call,
                {
                    "role": "user",
                    "parts": [
                        {"functionResponse": {"name": "get_weather", "response": {}}},
                        {"functionResponse": {"name": "get_weather", "response": {}}},
                    ],
                },
            ]
        },
    )
    assert (
        wrong_count.status_code == 400 and "number of function response parts" in wrong_count.json()["error"]["message"]
    )
    orphan = gpost(
        gsim,
        "generateContent",
        {"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {}}}]}]},
    )
    assert orphan.status_code == 400


@pytest.mark.parametrize(
    "body,fragment",
    [
        ({**USER, "generation_settings": {}}, 'Unknown name "generation_settings"'),
        ({**USER, "generationConfig": {"max_tokens": 3}}, 'Unknown name "max_tokens"'),
        ({"contents": []}, "contents is not specified"),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "valid role"),
        ({**USER, "generationConfig": {"responseJsonSchema": {"type": "object"}}}, "response_mime_type"),
        (
            {"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "@@@"}}]}]},
            "Base64 decoding failed",
        ),
    ],
)
def test_bad_requests_get_google_400s(gsim, body, fragment):
    r = gpost(gsim, "generateContent", body)
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert fragment in r.json()["error"]["message"]


def test_generation_config_shapes_the_reply(gsim):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    js = gpost(
        gsim,
        "generateContent",
        {**USER, "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": schema}},
    )
    assert json.loads(js.json()["candidates"][0]["content"]["parts"][0]["text"]) == {"n": 1}
    short = gpost(gsim, "generateContent", {**USER, "generationConfig": {"maxOutputTokens": 2}})
    assert short.json()["candidates"][0]["finishReason"] == "MAX_TOKENS"
    stop = gpost(gsim, "generateContent", {**USER, "generationConfig": {"stopSequences": ["You said"]}})
    assert stop.json()["candidates"][0]["content"]["parts"][0]["text"] == "Hello from gem. "
    image = {"inlineData": {"mimeType": "image/png", "data": "aGVsbG8="}}
    seen = gpost(gsim, "generateContent", {"contents": [{"role": "user", "parts": [{"text": "what"}, image]}]})
    assert seen.json()["candidates"][0]["content"]["parts"][0]["text"].endswith("I see 1 image(s).")


def test_faults_use_google_errors(gsim):
    r = gpost(gsim, "generateContent", USER, fault="throttle=2.5")
    err = r.json()["error"]
    assert r.status_code == 429 and err["status"] == "RESOURCE_EXHAUSTED"
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.5s"} in err["details"]
    for status, name in [(500, "INTERNAL"), (503, "UNAVAILABLE"), (504, "DEADLINE_EXCEEDED"), (404, "NOT_FOUND")]:
        r = gpost(gsim, "generateContent", USER, fault=f"status={status}")
        assert (r.status_code, r.json()["error"]["status"]) == (status, name)


def test_content_filter_faults(gsim):
    prompt = gpost(gsim, "generateContent", USER, fault="content_filter=prompt")
    assert prompt.status_code == 200 and prompt.json()["promptFeedback"]["blockReason"] == "SAFETY"
    assert "candidates" not in prompt.json()
    output = gpost(gsim, "generateContent", USER, fault="content_filter=output")
    assert output.json()["candidates"][0]["finishReason"] == "SAFETY"
    streamed = events(gpost(gsim, "streamGenerateContent", USER, fault="content_filter=output", query="?alt=sse"))
    assert streamed[-1]["candidates"][0]["finishReason"] == "SAFETY"


def test_stream_faults_malformed_and_cut(gsim):
    bad = gpost(gsim, "streamGenerateContent", USER, fault="malformed_at=2", query="?alt=sse")
    frames = [e for e in bad.content.split(b"\r\n\r\n") if e]
    assert frames[1] == b"data: {not json" and json.loads(frames[-1][6:])["candidates"][0]["finishReason"] == "STOP"
    with pytest.raises(httpx.HTTPError):
        gpost(gsim, "streamGenerateContent", USER, fault="cut_after=2", query="?alt=sse")
    assert gsim.stats()["cut"] == 1


def test_paced_stream_counts_and_runtime_fault_table(gsim):
    gsim.set_fault({"status": 503, "times": 1, "match": "gemini-2.5-flash"})
    assert gpost(gsim, "generateContent", USER).status_code == 503
    r = gpost(gsim, "streamGenerateContent", USER, fault="chunk_delay_ms=1", query="?alt=sse")
    assert events(r)[-1]["candidates"][0]["finishReason"] == "STOP"
    stats = gsim.stats()
    assert (stats["requests"], stats["errors"], stats["completed"]) == (2, 1, 1)
    assert [e["model"] for e in gsim.requests(5)] == ["gemini-2.5-flash", "gemini-2.5-flash"]


def test_batch_embed_contents(gsim):
    body = {
        "requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": t}]}, "outputDimensionality": 4}
            for t in ("a", "b")
        ]
    }
    r = gpost(gsim, "batchEmbedContents", body, model="text-embedding-004")
    vecs = [e["values"] for e in r.json()["embeddings"]]
    assert len(vecs) == 2 and all(len(v) == 4 for v in vecs) and vecs[0] != vecs[1]
    mismatch = gpost(
        gsim,
        "batchEmbedContents",
        {"requests": [{**body["requests"][0], "model": "models/other"}]},
        model="text-embedding-004",
    )
    assert mismatch.status_code == 400


VERTEX_PATH = "/v1/projects/proj-1/locations/us-central1/publishers/google/models"


@pytest.mark.parametrize("auth,status", [(None, 401), ("Bearer nope", 401), (f"Bearer {TOKEN}", 200)])
def test_vertex_requires_the_oauth_token(vsim, auth, status):
    headers = {"authorization": auth} if auth else {}
    r = httpx.post(f"{vsim.url}{VERTEX_PATH}/gemini-2.5-pro:generateContent", json=USER, headers=headers)
    assert r.status_code == status
    if status == 401:
        assert r.json()["error"]["status"] == "UNAUTHENTICATED"


def test_vertex_routes_stream_and_predict(vsim):
    headers = {"authorization": f"Bearer {TOKEN}"}
    r = httpx.post(f"{vsim.url}{VERTEX_PATH}/gemini-2.5-pro:streamGenerateContent?alt=sse", json=USER, headers=headers)
    assert events(r)[-1]["candidates"][0]["finishReason"] == "STOP"
    p = httpx.post(
        f"{vsim.url}{VERTEX_PATH}/text-embedding-005:predict",
        json={"instances": [{"content": "hi"}], "parameters": {"outputDimensionality": 3}},
        headers=headers,
    )
    pred = p.json()["predictions"][0]["embeddings"]
    assert len(pred["values"]) == 3 and pred["statistics"]["token_count"] == 1
    wrong = httpx.post(f"{vsim.url}/v1beta/models/gemini-2.5-pro:generateContent", json=USER, headers=headers)
    assert wrong.status_code == 404 and wrong.json()["error"]["status"] == "NOT_FOUND"


@pytest.mark.parametrize("dims", [10**21, 3073, -1, "8", 1.5])
def test_an_embedding_size_google_would_refuse_is_a_400_not_a_stuck_simulator(gsim, vsim, dims):
    """A huge outputDimensionality used to be computed (for 10**21, forever: the simulator stopped
    answering everything); Google refuses sizes beyond the model's with INVALID_ARGUMENT."""
    body = {
        "requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": dims}
        ]
    }
    r = gpost(gsim, "batchEmbedContents", body, model="text-embedding-004")
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    p = httpx.post(
        f"{vsim.url}{VERTEX_PATH}/text-embedding-005:predict",
        timeout=5,
        json={"instances": [{"content": "hi"}], "parameters": {"outputDimensionality": dims}},
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    assert p.status_code == 400 and p.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_vertex_refuses_a_location_its_endpoint_does_not_serve(vsim):
    """A regional endpoint (us-central1 here) serves its own location only, in Vertex AI's words."""
    headers = {"authorization": f"Bearer {TOKEN}"}
    path = VERTEX_PATH.replace("us-central1", "europe-west4")
    r = httpx.post(f"{vsim.url}{path}/gemini-2.5-pro:generateContent", json=USER, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert (
        "The provided location ID doesn't match the endpoint. The valid location ID is `us-central1`."
        in (r.json()["error"]["message"])
    )
