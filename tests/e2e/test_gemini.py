"""Gemini API and Vertex AI end to end: the openai SDK -> the real gateway -> the gemini/vertex simulators.

Vertex auth is real google-auth: a service-account JSON whose token_uri is a local OAuth2 token
endpoint (below) that checks the signed JWT assertion and hands out the token the simulator wants.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import jwt
import openai
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from builders import api_keys, config, deployment, embedding, group, simulated

from .processes import Gateway, Simulators

CLIENT_KEY = "mh-gemini-client-key"
GEMINI_KEY = "gemini-secret-key-789"
VERTEX_TOKEN = "ya29.vertex-access-token-abc"
SA_EMAIL = "multihome@proj-1.iam.gserviceaccount.com"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
SECRETS = {"MH_GEM_CLIENT_KEY": CLIENT_KEY, "MH_GEM_KEY": GEMINI_KEY, "SIM_VERTEX_TOKEN": VERTEX_TOKEN}
KINDS = ["gem", "vtx"]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Time in a zone",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
        },
    },
]
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n fake image").decode()

DECLINES = ["capacity", "unavailable"]  # fail over on these only: a refusal reaches the client


def _config(sims) -> dict:
    """The Gemini API (an API key) and Vertex AI (a service account), an OpenAI backup to fail over to."""
    vertex_auth = {"google": {"service_account_file_env": "MH_GEM_SA_FILE"}}
    return config(
        server=api_keys("MH_GEM_CLIENT_KEY"),
        providers={
            "gemini": simulated("gemini", sims["gemini"].url, key_env="MH_GEM_KEY"),
            "vertex": simulated("vertex", sims["vertex"].url, region="us-central1", project="proj-1", auth=vertex_auth),
            "openai": simulated("openai", sims["openai"].url),
        },
        deployments={
            "gem-main": deployment("gemini", "gemini-2.5-flash"),
            "vtx-main": deployment("vertex", "gemini-2.5-pro"),
            "gem-fo": deployment("gemini", "gemini-fo"),
            "gem-strict": deployment("gemini", "gemini-strict"),
            "oa-backup": deployment("openai", "gpt-4o-backup"),
            "gem-embed": embedding("gemini", "text-embedding-004"),
            "vtx-embed": embedding("vertex", "text-embedding-005"),
            "vtx-gemb": embedding("vertex", "gemini-embedding-001"),
        },
        model_groups={
            "gem": group("gem-main", retries=0, fail_over_on=DECLINES),
            "vtx": group("vtx-main", retries=0, fail_over_on=DECLINES),
            "gem-fo": group(
                "gem-fo", "oa-backup", retries=1, backoff_ms=10, max_retry_after_s=1, fail_over_on=DECLINES
            ),
            "gem-strict": group("gem-strict", "oa-backup", retries=0, fail_over_on=[*DECLINES, "refusal"]),
            "gem-embed": group("gem-embed", retries=0, fail_over_on=DECLINES),
            "vtx-embed": group("vtx-embed", retries=0, fail_over_on=DECLINES),
            "vtx-gemb": group("vtx-gemb", retries=0, fail_over_on=DECLINES),
        },
    )


class _TokenEndpoint(BaseHTTPRequestHandler):
    """Google's OAuth2 token endpoint for the JWT-bearer grant (what google-auth's service account uses)."""

    calls: list[dict] = []
    public_key = None
    token_uri = ""

    def do_POST(self):
        form = parse_qs(self.rfile.read(int(self.headers["content-length"])).decode())
        claims = None
        try:
            # google-auth signs for Google's token audience whatever token_uri points at.
            claims = jwt.decode(
                form["assertion"][0],
                self.public_key,
                algorithms=["RS256"],
                audience="https://oauth2.googleapis.com/token",
            )
        except (jwt.PyJWTError, KeyError):
            pass
        grant_ok = form.get("grant_type") == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
        _TokenEndpoint.calls.append({"claims": claims, "grant_ok": grant_ok})
        if claims is None or not grant_ok or claims.get("iss") != SA_EMAIL:
            body, status = b'{"error":"invalid_grant","error_description":"Invalid JWT Signature."}', 400
        else:
            body, status = (
                json.dumps({"access_token": VERTEX_TOKEN, "expires_in": 3599, "token_type": "Bearer"}).encode(),
                200,
            )
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def service_account(tmp_path_factory):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenEndpoint)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _TokenEndpoint.calls = []
    _TokenEndpoint.public_key = key.public_key()
    _TokenEndpoint.token_uri = f"http://127.0.0.1:{server.server_address[1]}/token"
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path = tmp_path_factory.mktemp("sa") / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "proj-1",
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": SA_EMAIL,
                "client_id": "1",
                "token_uri": _TokenEndpoint.token_uri,
            }
        )
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()


@pytest.fixture(scope="module")
def sims():
    with Simulators() as started:
        yield {
            "gemini": started.start("gemini", "gemini-sim", key_env="MH_GEM_KEY", env=SECRETS),
            "vertex": started.start(
                "vertex", "vertex-sim", key_env="SIM_VERTEX_TOKEN", region="us-central1", env=SECRETS
            ),
            "openai": started.start("openai", "openai-backup"),
        }


@pytest.fixture(scope="module")
def gateway(sims, service_account, tmp_path_factory):
    gw = Gateway(_config(sims), tmp_path_factory.mktemp("gw"), {**SECRETS, "MH_GEM_SA_FILE": str(service_account)})
    yield gw
    log = gw.stop()
    for secret in (GEMINI_KEY, VERTEX_TOKEN, CLIENT_KEY):
        assert secret not in log, "a secret reached the gateway's log"


@pytest.fixture
def client(gateway, sims):
    for sim in sims.values():
        sim.reset()
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=15)


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def outcomes(raw) -> list[tuple[str, str]]:
    items = [part.split(";") for part in raw.headers["x-multihome-attempts"].split(", ")]
    return [(item[0], item[1].removeprefix("outcome=")) for item in items]


# -- chat -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", KINDS)
def test_chat_reply_usage_and_system_prompt(client, sims, model):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "system", "content": "Be brief."}, *ask("Hello there")]
    )
    reply = raw.parse()
    sim = "gemini-sim" if model == "gem" else "vertex-sim"
    assert reply.choices[0].message.content == f"Hello from {sim}. You said: Hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert (
        reply.usage.prompt_tokens > 0
        and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    )
    assert raw.headers["x-multihome-deployment"] == f"{model}-main"


@pytest.mark.parametrize("model", KINDS)
def test_stream_with_usage(client, model):
    stream = client.chat.completions.create(
        model=model, messages=ask("Hello there"), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.endswith("You said: Hello there")
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("model", KINDS)
def test_tools_and_parallel_tools(client, model):
    one = client.chat.completions.create(model=model, messages=ask("Weather in Oslo?"), tools=TOOLS)
    calls = one.choices[0].message.tool_calls
    assert one.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "example"})
    ]
    assert calls[0].id.startswith("call_")
    both = client.chat.completions.create(model=model, messages=ask("Both in parallel please"), tools=TOOLS)
    assert [c.function.name for c in both.choices[0].message.tool_calls] == ["get_weather", "get_time"]
    named = client.chat.completions.create(
        model=model, messages=ask("x"), tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}}
    )
    assert [c.function.name for c in named.choices[0].message.tool_calls] == ["get_time"]


def _run_tools(calls) -> list[dict]:
    return [
        {
            "role": "tool",
            "tool_call_id": c["id"],
            "content": json.dumps({"tool": c["function"]["name"], "ok": True})
            if c["function"]["name"] == "get_weather"
            else "noon",
        }
        for c in calls
    ]


def _turn(client, model: str, messages: list[dict], stream: bool, **extra) -> tuple[str | None, list[dict]]:
    """One model call; returns (text, tool calls as OpenAI message dicts), assembling streamed deltas."""
    if not stream:
        msg = client.chat.completions.create(model=model, messages=messages, tools=TOOLS, **extra).choices[0].message
        return msg.content, [c.model_dump(include={"id", "type", "function"}) for c in msg.tool_calls or []]
    text, calls = "", {}
    for chunk in client.chat.completions.create(model=model, messages=messages, tools=TOOLS, stream=True, **extra):
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is None:
            continue
        text += delta.content or ""
        for tc in delta.tool_calls or []:
            slot = calls.setdefault(
                tc.index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
            )
            slot["id"] = tc.id or slot["id"]
            slot["function"]["name"] += (tc.function.name or "") if tc.id else ""
            slot["function"]["arguments"] += tc.function.arguments or ""
    return text or None, [calls[i] for i in sorted(calls)]


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("model", KINDS)
def test_three_step_agent_loop(client, model, stream):
    """Three tasks, each: the model calls tools, the agent runs them, the model answers from the results.
    The history grows with every call and result, so each request replays all earlier tool turns."""
    messages: list[dict] = []
    script = [
        ("What is the weather in Oslo?", {}, ["get_weather"]),
        ("Now weather and time, in parallel", {}, ["get_weather", "get_time"]),
        ("And just the time", {"tool_choice": {"type": "function", "function": {"name": "get_time"}}}, ["get_time"]),
    ]
    for question, extra, expected in script:
        messages.append({"role": "user", "content": question})
        answer = None
        for _ in range(4):  # bounded: a tool step then an answer
            text, calls = _turn(client, model, messages, stream, **extra)
            if not calls:
                answer = text
                break
            assert [c["function"]["name"] for c in calls] == expected
            assert len({c["id"] for c in calls}) == len(calls)
            messages.append({"role": "assistant", "content": text, "tool_calls": calls})
            messages.extend(_run_tools(calls))
            extra = {}
        assert answer is not None and answer.startswith(f"Tool {expected[-1]} returned:")
    assert len(messages) == 3 + 3 + 4  # user, assistant, tool results per step


def test_image_json_schema_stop_and_length(client):
    image = client.chat.completions.create(
        model="gem",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": PNG}},
                ],
            }
        ],
    )
    assert image.choices[0].message.content.endswith("I see 1 image(s).")
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 3}},
        "required": ["city", "days"],
        "additionalProperties": False,
    }
    js = client.chat.completions.create(
        model="vtx",
        messages=ask("Plan"),
        response_format={"type": "json_schema", "json_schema": {"name": "plan", "schema": schema, "strict": True}},
    )
    assert json.loads(js.choices[0].message.content) == {"city": "example", "days": 3}
    stop = client.chat.completions.create(model="gem", messages=ask("Hello there"), stop=["You said"])
    assert stop.choices[0].message.content == "Hello from gemini-sim. " and stop.choices[0].finish_reason == "stop"
    short = client.chat.completions.create(model="vtx", messages=ask("Hello there"), max_tokens=3)
    assert short.choices[0].finish_reason == "length" and len(short.choices[0].message.content) == 12


def test_dropped_and_refused_parameters(client):
    raw = client.chat.completions.with_raw_response.create(
        model="gem", messages=ask("hi"), tools=TOOLS, parallel_tool_calls=False, logit_bias={"42": 1}
    )
    assert raw.headers["x-multihome-dropped-params"] == "logit_bias,parallel_tool_calls"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="gem", messages=ask("hi"), modalities=["text", "audio"])
    assert "modalities" in str(exc.value)


def test_unknown_tool_call_id_is_a_400_before_any_upstream_call(client, sims):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(
            model="gem", messages=[*ask("x"), {"role": "tool", "tool_call_id": "call_nope", "content": "r"}]
        )
    assert "call_nope" in str(exc.value)
    assert sims["gemini"].stats()["requests"] == 0


# -- embeddings -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gem-embed", "vtx-embed"])
def test_embeddings_float_and_base64(client, model):
    floats = client.embeddings.create(model=model, input=["alpha", "beta"], dimensions=6)
    assert [len(d.embedding) for d in floats.data] == [6, 6] and floats.data[0].embedding != floats.data[1].embedding
    raw = client.embeddings.with_raw_response.create(
        model=model, input=["alpha", "beta"], dimensions=6, encoding_format="base64"
    )
    b64 = json.loads(raw.content)["data"]
    decoded = list(struct.unpack("<6f", base64.b64decode(b64[0]["embedding"])))
    assert decoded == pytest.approx(floats.data[0].embedding, rel=1e-6)
    if model == "vtx-embed":
        assert floats.usage.prompt_tokens == 3  # Vertex reports token counts per instance


def test_gemini_embedding_on_vertex_sends_one_instance_per_request(client, sims):
    """Google's gemini-embedding-001 takes one instance per :predict: five inputs are five upstream
    calls, answered in input order, their token counts summed."""
    texts = ["alpha", "beta gamma", "delta epsilon zeta", "eta", "theta iota kappa lambda"]
    batch = client.embeddings.create(model="vtx-gemb", input=texts, dimensions=8)
    calls = [r for r in sims["vertex"].requests() if r["path"].endswith("gemini-embedding-001:predict")]
    assert [r["outcome"] for r in calls] == ["ok"] * 5
    sent = [json.loads(r["body"])["instances"] for r in calls]
    assert all(len(instances) == 1 for instances in sent)
    assert sorted(i[0]["content"] for i in sent) == sorted(texts)
    assert [d.index for d in batch.data] == [0, 1, 2, 3, 4]
    singles = [client.embeddings.create(model="vtx-gemb", input=t, dimensions=8) for t in texts]
    assert [d.embedding for d in batch.data] == [s.data[0].embedding for s in singles]  # input order kept
    assert batch.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in singles) > 0


def test_a_refused_piece_of_a_fanned_out_call_is_the_clients_error(client, sims):
    sims["vertex"].fault(status=400, match="gemini-embedding-001")
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="vtx-gemb", input=["one", "two", "three"])


# -- declines and broken streams ---------------------------------------------------------


def test_throttling_fails_over_using_google_retry_delay(client, sims):
    sims["gemini"].fault(throttle=30, match="gemini-fo")
    raw = client.chat.completions.with_raw_response.create(model="gem-fo", messages=ask("Hello there"))
    # RetryInfo.retryDelay (30s) exceeds the group's max_retry_after_s: no retry on the throttled deployment.
    assert outcomes(raw) == [("gem-fo", "http_429"), ("oa-backup", "ok")]
    assert raw.parse().choices[0].message.content.startswith("Hello from openai-backup")


def test_unavailable_fails_over(client, sims):
    sims["gemini"].fault(status=503, match="gemini-fo")
    raw = client.chat.completions.with_raw_response.create(model="gem-fo", messages=ask("Hello there"))
    assert [o for _, o in outcomes(raw)] == ["http_503", "http_503", "ok"]


@pytest.mark.parametrize("where", ["prompt", "output"])
def test_safety_block_is_a_refusal(client, sims, where):
    sims["gemini"].fault(content_filter=where, match="gemini-2.5-flash")
    reply = client.chat.completions.create(model="gem", messages=ask("Hello there"))
    assert reply.choices[0].finish_reason == "content_filter"
    assert reply.choices[0].message.content is None and "safety" in reply.choices[0].message.refusal
    sims["gemini"].fault(content_filter=where, match="gemini-strict")
    raw = client.chat.completions.with_raw_response.create(model="gem-strict", messages=ask("Hello there"))
    assert outcomes(raw) == [("gem-strict", "content_filter"), ("oa-backup", "ok")]


def test_malformed_stream_before_first_byte_fails_over(client, sims):
    sims["gemini"].fault(malformed_at=1, match="gemini-fo")
    raw = client.chat.completions.with_raw_response.create(model="gem-fo", messages=ask("Hello there"), stream=True)
    assert outcomes(raw)[-1] == ("oa-backup", "ok") and outcomes(raw)[0][1] == "malformed_stream"
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text.startswith("Hello from openai-backup")


def test_malformed_stream_after_first_byte_raises_in_the_sdk(client, sims):
    sims["gemini"].fault(malformed_at=4, chunk_delay_ms=20, match="gemini-2.5-flash")
    got = []
    with pytest.raises(openai.APIError) as exc:
        for chunk in client.chat.completions.create(model="gem", messages=ask("Hello there"), stream=True):
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got).startswith("Hello from")
    assert "incomplete" in str(exc.value)


def test_stream_cut_mid_way_is_reported_not_truncated(client, sims):
    sims["vertex"].fault(cut_after=3, match="gemini-2.5-pro")
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="vtx", messages=ask("Hello there"), stream=True):
            pass


# -- Vertex OAuth -------------------------------------------------------------------------


def test_vertex_service_account_token_is_fetched_once_and_sent(client, sims):
    for _ in range(3):
        assert client.chat.completions.create(model="vtx", messages=ask("hi")).choices[0].message.content
    list(client.chat.completions.create(model="vtx", messages=ask("hi"), stream=True))
    client.embeddings.create(model="vtx-embed", input="hi")
    assert len(_TokenEndpoint.calls) == 1, "the OAuth token is cached, not fetched per call"
    claims = _TokenEndpoint.calls[0]["claims"]
    assert claims["iss"] == SA_EMAIL and claims["scope"] == SCOPE and claims["exp"] > time.time()
    # The simulator only accepts VERTEX_TOKEN, so every one of these calls carried it.
    assert [r["outcome"] for r in sims["vertex"].requests()] == ["ok"] * 5
