"""The `gemini` and `vertex` simulators judged by Google's own SDK (`google-genai`): what it sends is
what Google accepts, so a simulator that refuses it (or an adapter test that only agrees with the
simulator) would be wrong. Covers both spellings of field names, `:countTokens`, embeddings on both
APIs, Vertex AI with a service account and in express mode, `?key=`, and the stop-sequence limit."""

from __future__ import annotations

import google.auth.transport.requests
import httpx
import pytest
from google import genai
from google.genai import errors, types
from google.oauth2 import service_account

from google_sa import new_key, public_pem, service_account_info
from multihome.simulators import SimulatorConfig, start_simulator_in_thread

KEY = "gemini-sdk-key"
EXPRESS_KEY = "vertex-express-key"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
SIGNER = new_key()
PNG = b"\x89PNG\r\n\x1a\n fake image"
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Weather for a city",
    parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest.fixture(scope="module")
def gemini_sim():
    sim = start_simulator_in_thread(SimulatorConfig(kind="gemini", name="gem-sdk", api_key=KEY))
    yield sim
    sim.close()


@pytest.fixture(scope="module")
def token_sim():
    """Google's OAuth2 token endpoint for service accounts (the vertex_anthropic kind serves POST /token)."""
    sim = start_simulator_in_thread(
        SimulatorConfig(kind="vertex_anthropic", name="google-token", google_public_key=public_pem(SIGNER))
    )
    yield sim
    sim.close()


@pytest.fixture(scope="module")
def credentials(token_sim):
    """A service account signed in through the token endpoint: the vertex simulator accepts only its token."""
    creds = service_account.Credentials.from_service_account_info(
        service_account_info(SIGNER, token_sim.url + "/token"), scopes=SCOPES
    )
    creds.refresh(google.auth.transport.requests.Request())
    assert creds.token and token_sim.sim.app.token_grants == 1
    return creds


@pytest.fixture(scope="module")
def vertex_sim(credentials):
    sim = start_simulator_in_thread(
        SimulatorConfig(kind="vertex", name="vtx-sdk", oauth_token=credentials.token, api_key=EXPRESS_KEY)
    )
    yield sim
    sim.close()


@pytest.fixture
def gem(gemini_sim) -> genai.Client:
    gemini_sim.reset()
    return genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=gemini_sim.url))


@pytest.fixture
def vtx(vertex_sim, credentials) -> genai.Client:
    vertex_sim.reset()
    return genai.Client(
        vertexai=True,
        project="proj-1",
        location="us-central1",
        credentials=credentials,
        http_options=types.HttpOptions(base_url=vertex_sim.url),
    )


@pytest.fixture
def express(vertex_sim) -> genai.Client:
    vertex_sim.reset()
    return genai.Client(vertexai=True, api_key=EXPRESS_KEY, http_options=types.HttpOptions(base_url=vertex_sim.url))


CLIENTS = ["gem", "vtx", "express"]


def _client(request, name: str) -> genai.Client:
    client: genai.Client = request.getfixturevalue(name)
    return client


@pytest.mark.parametrize("name", CLIENTS)
def test_generate_content_with_the_sdk(request, name):
    r = _client(request, name).models.generate_content(model="gemini-2.5-flash", contents="Hello there")
    assert r.candidates and r.candidates[0].finish_reason == types.FinishReason.STOP
    assert "Hello there" in (r.text or "") and r.usage_metadata and r.usage_metadata.prompt_token_count


@pytest.mark.parametrize("name", CLIENTS)
def test_stream_with_the_sdk(request, name):
    chunks = list(_client(request, name).models.generate_content_stream(model="gemini-2.5-flash", contents="Hi there"))
    assert len(chunks) > 1 and "Hi there" in "".join(c.text or "" for c in chunks)


@pytest.mark.parametrize("name", CLIENTS)
def test_snake_case_fields_the_sdk_sends_are_read(request, name):
    """parameters_json_schema, response_json_schema, inline data and file data, as the SDK spells them."""
    client = _client(request, name)
    call = client.models.generate_content(
        model="gemini-2.5-flash",
        contents="What is the weather in Paris?",
        config=types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=[WEATHER])],
            tool_config=types.ToolConfig(
                function_calling_config=types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.ANY)
            ),
        ),
    )
    assert call.function_calls and call.function_calls[0].name == "get_weather"
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    structured = client.models.generate_content(
        model="gemini-2.5-flash",
        contents="Answer in JSON",
        config=types.GenerateContentConfig(response_mime_type="application/json", response_json_schema=schema),
    )
    assert isinstance(structured.parsed, dict) and "answer" in structured.parsed
    media = client.models.generate_content(
        model="gemini-2.5-flash",
        contents=[
            types.Part.from_bytes(data=PNG, mime_type="image/png"),
            types.Part.from_uri(file_uri="gs://bucket/cat.png", mime_type="image/png"),
            "Describe these",
        ],
    )
    assert media.text


@pytest.mark.parametrize("name", CLIENTS)
def test_five_stop_sequences_are_honoured_and_a_sixth_is_refused(request, name):
    client = _client(request, name)
    # The planner echoes the prompt; the fifth sequence is the one that cuts it.
    stops = ["zz1", "zz2", "zz3", "zz4", "there"]
    r = client.models.generate_content(
        model="gemini-2.5-flash",
        contents="Hello there friend",
        config=types.GenerateContentConfig(stop_sequences=stops),
    )
    assert "there" not in (r.text or "") and "friend" not in (r.text or "")
    with pytest.raises(errors.ClientError) as err:
        client.models.generate_content(
            model="gemini-2.5-flash",
            contents="Hello",
            config=types.GenerateContentConfig(stop_sequences=[*stops, "six"]),
        )
    assert err.value.code == 400 and err.value.status == "INVALID_ARGUMENT"
    assert "at most 5 stop sequences" in (err.value.message or "")


@pytest.mark.parametrize("name", CLIENTS)
def test_count_tokens(request, name):
    client = _client(request, name)
    short = client.models.count_tokens(model="gemini-2.5-flash", contents="Hello")
    long = client.models.count_tokens(model="gemini-2.5-flash", contents="Hello " * 50)
    assert short.total_tokens and long.total_tokens and long.total_tokens > short.total_tokens
    r = client.models.generate_content(model="gemini-2.5-flash", contents="Hello " * 50)
    assert r.usage_metadata and r.usage_metadata.prompt_token_count == long.total_tokens


@pytest.mark.parametrize("name", CLIENTS)
def test_embeddings_with_a_gemini_model(request, name):
    """Gemini API: :batchEmbedContents; Vertex AI: :embedContent for one input, :batchEmbedContents for several."""
    client = _client(request, name)
    one = client.models.embed_content(model="gemini-embedding-001", contents="hello")
    assert one.embeddings and len(one.embeddings) == 1 and one.embeddings[0].values
    many = client.models.embed_content(
        model="gemini-embedding-001",
        contents=["alpha", "beta", "gamma"],
        config=types.EmbedContentConfig(output_dimensionality=16),
    )
    assert many.embeddings and [len(e.values or []) for e in many.embeddings] == [16, 16, 16]
    assert many.embeddings[0].values != many.embeddings[1].values


def test_vertex_predict_embeddings_with_a_text_embedding_model(vtx):
    r = vtx.models.embed_content(model="text-embedding-005", contents=["alpha", "beta"])
    assert r.embeddings and len(r.embeddings) == 2
    assert r.embeddings[0].statistics and r.embeddings[0].statistics.token_count


def test_vertex_predict_takes_one_instance_for_gemini_embedding(vertex_sim, credentials):
    """Google's rule for gemini-embedding-001 on :predict: one instance per request."""
    vertex_sim.reset()
    url = f"{vertex_sim.url}/v1/projects/proj-1/locations/us-central1/publishers/google/models/gemini-embedding-001:predict"
    auth = {"authorization": f"Bearer {credentials.token}"}
    two = httpx.post(url, headers=auth, json={"instances": [{"content": "a"}, {"content": "b"}]})
    assert two.status_code == 400
    err = two.json()["error"]
    assert err["status"] == "INVALID_ARGUMENT" and err["code"] == 400
    assert err["message"] == "1 instance(s) is allowed per prediction. Actual: 2"  # Vertex AI's words
    one = httpx.post(url, headers=auth, json={"instances": [{"content": "a"}]})
    assert one.status_code == 200 and len(one.json()["predictions"]) == 1


def test_key_in_the_query_string(gemini_sim, vertex_sim):
    """`?key=` stands for the x-goog-api-key header, on the Gemini API and in Vertex express mode."""
    body = {"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}
    urls = {
        KEY: f"{gemini_sim.url}/v1beta/models/gemini-2.5-flash:generateContent",
        EXPRESS_KEY: f"{vertex_sim.url}/v1/publishers/google/models/gemini-2.5-flash:generateContent",
    }
    for key, url in urls.items():
        assert httpx.post(url, params={"key": key}, json=body).status_code == 200
        wrong = httpx.post(url, params={"key": "nope"}, json=body)
        assert wrong.status_code == 400 and wrong.json()["error"]["status"] == "INVALID_ARGUMENT"
    no_key = httpx.post(urls[KEY], json=body)
    assert no_key.status_code == 403
    # Vertex AI's project paths still want OAuth: no credential at all is a 401.
    project = f"{vertex_sim.url}/v1/projects/p/locations/l/publishers/google/models/gemini-2.5-flash:generateContent"
    assert httpx.post(project, json=body).status_code == 401


def test_a_token_the_endpoint_did_not_issue_is_refused(vertex_sim):
    url = f"{vertex_sim.url}/v1/projects/p/locations/l/publishers/google/models/gemini-2.5-flash:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}
    r = httpx.post(url, headers={"authorization": "Bearer ya29.forged"}, json=body)
    assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"


# -- thinking: thought parts, thoughtsTokenCount, thought signatures ---------------------------------------

THINK = types.ThinkingConfig(include_thoughts=True, thinking_budget=1024)


@pytest.mark.parametrize("name", CLIENTS)
def test_thoughts_and_their_token_count_parse_in_the_sdk(request, name):
    r = _client(request, name).models.generate_content(
        model="gemini-2.5-flash",
        contents="Why is the sky blue?",
        config=types.GenerateContentConfig(thinking_config=THINK),
    )
    parts = r.candidates[0].content.parts
    assert parts[0].thought is True and "Why is the sky blue?" in parts[0].text
    assert not parts[-1].thought and "Why is the sky blue?" in r.text  # r.text leaves thoughts out
    u = r.usage_metadata
    assert u.thoughts_token_count and u.thoughts_token_count > 0
    # Thoughts are reported apart from the answer's tokens, and counted in the total.
    assert u.total_token_count == u.prompt_token_count + u.candidates_token_count + u.thoughts_token_count
    plain = _client(request, name).models.generate_content(model="gemini-2.5-flash", contents="Why is the sky blue?")
    assert plain.usage_metadata.thoughts_token_count is None and not any(
        p.thought for p in plain.candidates[0].content.parts
    )


@pytest.mark.parametrize("name", CLIENTS)
def test_streamed_thoughts_come_first_and_the_last_chunk_counts_them(request, name):
    chunks = list(
        _client(request, name).models.generate_content_stream(
            model="gemini-2.5-flash", contents="Hi there", config=types.GenerateContentConfig(thinking_config=THINK)
        )
    )
    kinds = [bool(p.thought) for c in chunks for p in (c.candidates[0].content.parts or ()) if p.text]
    assert kinds[0] is True and kinds[-1] is False and kinds == sorted(kinds, reverse=True)
    assert chunks[-1].usage_metadata.thoughts_token_count > 0


def test_gemini_3_function_call_signature_goes_back_through_the_sdk_chat(gem):
    """Gemini 3 signs the first function call; the SDK's chat replays it, and a history without it
    (or with another signature) is refused, in Google's words."""
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[WEATHER])])
    chat = gem.chats.create(model="gemini-3-pro-preview", config=config)
    first = chat.send_message("What is the weather in Paris?")
    part = first.candidates[0].content.parts[0]
    assert part.function_call and part.function_call.name == "get_weather"
    assert isinstance(part.thought_signature, bytes) and len(part.thought_signature) == 32
    assert first.usage_metadata.thoughts_token_count > 0  # Gemini 3 always thinks
    answer = chat.send_message(types.Part.from_function_response(name="get_weather", response={"temp": 21}))
    assert answer.text and answer.candidates[0].finish_reason == types.FinishReason.STOP

    call = types.Part(function_call=part.function_call)
    result = types.Part.from_function_response(name="get_weather", response={"temp": 21})
    history = [
        types.Content(role="user", parts=[types.Part(text="What is the weather in Paris?")]),
        types.Content(role="model", parts=[call]),
        types.Content(role="user", parts=[result]),
    ]
    with pytest.raises(errors.ClientError) as missing:
        gem.models.generate_content(model="gemini-3-pro-preview", contents=history, config=config)
    assert missing.value.code == 400 and "missing a thought_signature" in missing.value.message
    history[1] = types.Content(
        role="model", parts=[types.Part(function_call=part.function_call, thought_signature=b"x" * 32)]
    )
    with pytest.raises(errors.ClientError) as altered:
        gem.models.generate_content(model="gemini-3-pro-preview", contents=history, config=config)
    assert altered.value.code == 400
    skip = b"skip_thought_signature_validator"  # Google's stand-in for a history another model wrote
    history[1] = types.Content(
        role="model", parts=[types.Part(function_call=part.function_call, thought_signature=skip)]
    )
    assert gem.models.generate_content(model="gemini-3-pro-preview", contents=history, config=config).text


def test_thinking_config_is_checked(gem):
    both = types.ThinkingConfig(thinking_budget=1024, thinking_level=types.ThinkingLevel.LOW)
    for model, cfg in (
        ("gemini-3-pro-preview", both),
        ("gemini-2.5-flash", types.ThinkingConfig(thinking_level="LOW")),
    ):
        with pytest.raises(errors.ClientError) as refused:
            gem.models.generate_content(
                model=model, contents="Hi", config=types.GenerateContentConfig(thinking_config=cfg)
            )
        assert refused.value.code == 400
    low = gem.models.generate_content(
        model="gemini-3-pro-preview",
        contents="Hi",
        config=types.GenerateContentConfig(
            thinking_config=types.ThinkingConfig(thinking_level="LOW", include_thoughts=True)
        ),
    )
    assert low.candidates[0].content.parts[0].thought is True
