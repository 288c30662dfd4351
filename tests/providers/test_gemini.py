"""Gemini/Vertex adapter: translation both ways, stream decoding, errors, embeddings, token cache."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time

import pytest

from builders import config, deployment, group, open_door, provider, typed
from multihome.config import GoogleAuth
from multihome.providers import google as gemini_auth
from multihome.providers.base import CAPACITY, CLIENT_ERROR, CONTEXT_OVERFLOW, UNAVAILABLE
from multihome.providers.gemini.adapter import GeminiAdapter, build
from multihome.providers.gemini.stream import GeminiStreamDecoder
from multihome.schema.chat import parse_chat
from multihome.schema.embeddings import parse_embeddings
from multihome.schema.errors import ApiError

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode()
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]


def gem() -> GeminiAdapter:
    return GeminiAdapter("gemini", "https://generativelanguage.googleapis.com", api_key="k")


def translate(body: dict, adapter: GeminiAdapter | None = None):
    req = asyncio.run(
        (adapter or gem()).chat_request(parse_chat(json.dumps({"model": "m", **body}).encode()), "gemini-2.5-flash")
    )
    return req, json.loads(req.body)


# -- request translation (table-driven) ----------------------------------------------------

REQUEST_CASES = [
    (
        "system and developer lifted, roles mapped, same-role turns merged",
        {
            "messages": [
                {"role": "system", "content": "A"},
                {"role": "user", "content": "u1"},
                {"role": "developer", "content": "B"},
                {"role": "user", "content": "u2"},
                {"role": "assistant", "content": "a1"},
                {"role": "assistant", "content": "a2"},
            ]
        },
        {
            "systemInstruction": {"parts": [{"text": "A\n\nB"}]},
            "contents": [
                {"role": "user", "parts": [{"text": "u1"}, {"text": "u2"}]},
                {"role": "model", "parts": [{"text": "a1"}, {"text": "a2"}]},
            ],
        },
    ),
    (
        "generation parameters",
        {
            "messages": [{"role": "user", "content": "x"}],
            "max_completion_tokens": 50,
            "temperature": 1.5,
            "top_p": 0.5,
            "stop": ["END"],
            "n": 2,
            "seed": 7,
            "presence_penalty": 0.5,
            "frequency_penalty": -0.5,
        },
        {
            "generationConfig": {
                "maxOutputTokens": 50,
                "temperature": 1.5,
                "topP": 0.5,
                "stopSequences": ["END"],
                "candidateCount": 2,
                "seed": 7,
                "presencePenalty": 0.5,
                "frequencyPenalty": -0.5,
            }
        },
    ),
    (
        "json_schema",
        {
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "r", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
            },
        },
        {
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseJsonSchema": {"type": "object", "properties": {"a": {"type": "string"}}},
            }
        },
    ),
    (
        "json mode",
        {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}},
        {"generationConfig": {"responseMimeType": "application/json"}},
    ),
    (
        "tools keep their JSON Schema untouched",
        {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS},
        {
            "tools": [
                {
                    "functionDeclarations": [
                        {
                            "name": "get_weather",
                            "description": "Weather",
                            "parametersJsonSchema": TOOLS[0]["function"]["parameters"],
                        },
                        {"name": "get_time", "parametersJsonSchema": {"type": "object", "properties": {}}},
                    ]
                }
            ]
        },
    ),
    (
        "tool_choice auto",
        {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS, "tool_choice": "auto"},
        {"toolConfig": {"functionCallingConfig": {"mode": "AUTO"}}},
    ),
    (
        "tool_choice none",
        {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS, "tool_choice": "none"},
        {"toolConfig": {"functionCallingConfig": {"mode": "NONE"}}},
    ),
    (
        "tool_choice required",
        {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS, "tool_choice": "required"},
        {"toolConfig": {"functionCallingConfig": {"mode": "ANY"}}},
    ),
    (
        "tool_choice named",
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": TOOLS,
            "tool_choice": {"type": "function", "function": {"name": "get_time"}},
        },
        {"toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}}},
    ),
    (
        "images: data URL inline",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": PNG}}],
                }
            ]
        },
        {
            "contents": [
                {
                    "role": "user",
                    "parts": [{"text": "look"}, {"inlineData": {"mimeType": "image/png", "data": PNG.split(",")[1]}}],
                }
            ]
        },
    ),
    (
        "tool round trip: calls become functionCall, results functionResponse matched by name, merged into one user turn",
        {
            "messages": [
                {"role": "user", "content": "weather and time"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        },
                        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
                    ],
                },
                {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
                {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 3}'},
            ]
        },
        {
            "contents": [
                {"role": "user", "parts": [{"text": "weather and time"}]},
                {
                    "role": "model",
                    "parts": [
                        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
                        {"functionCall": {"name": "get_time", "args": {}}},
                    ],
                },
                {
                    "role": "user",
                    "parts": [
                        {"functionResponse": {"name": "get_time", "response": {"result": "12:00"}}},
                        {"functionResponse": {"name": "get_weather", "response": {"temp": 3}}},
                    ],
                },
            ]
        },
    ),
]


@pytest.mark.parametrize("name,body,expected", REQUEST_CASES, ids=[c[0] for c in REQUEST_CASES])
def test_request_translation(name, body, expected):
    _, out = translate(body)
    for key, value in expected.items():
        assert out[key] == value


def test_urls_auth_and_stream_method():
    req, _ = translate({"messages": [{"role": "user", "content": "x"}], "stream": True})
    assert (
        req.url
        == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    assert req.headers["x-goog-api-key"] == "k"
    cfg = typed(
        config(
            server=open_door(),
            providers={
                "v": provider("vertex", region="europe-west4", project="my-proj"),
                "g": provider("vertex", region="global", project="p2"),
            },
            deployments={"d": deployment("v", "m")},
            model_groups={"m": group("d")},
        )
    )
    v = build("v", cfg.providers["v"])
    assert v.model_url("gemini-2.5-pro", "generateContent") == (
        "https://europe-west4-aiplatform.googleapis.com/v1/projects/my-proj/locations/europe-west4/"
        "publishers/google/models/gemini-2.5-pro:generateContent"
    )
    assert build("g", cfg.providers["g"]).base == "https://aiplatform.googleapis.com"


@pytest.mark.parametrize(
    "body,param",
    [
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"web_search_options": {}}, "web_search_options"),
    ],
)
def test_refused_parameters_are_400(body, param):
    with pytest.raises(ApiError) as exc:
        translate({"messages": [{"role": "user", "content": "x"}], **body})
    assert exc.value.status == 400 and exc.value.body.param == param


def test_dropped_parameters_are_reported_and_noop_values_are_not():
    req, out = translate(
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": TOOLS,
            "parallel_tool_calls": False,
            "logit_bias": {"1": 2},
            "user": "u",
            "logprobs": False,
            "store": False,
        }
    )
    assert req.dropped == ["logit_bias", "parallel_tool_calls", "user"]
    assert "parallel_tool_calls" not in json.dumps(out)


@pytest.mark.parametrize(
    "messages,fragment",
    [
        ([{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_zzz", "content": "r"}], "call_zzz"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat"}}]}],
            "images must be",
        ),
        ([{"role": "system", "content": "only a system prompt"}], "no user or assistant message"),
        # An unhashable format used to reach the MIME table's lookup and fail with a TypeError (500).
        (
            [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": ["wav"]}}]}],
            "input_audio needs",
        ),
        (
            [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": {"x": 1}}}]}],
            "input_audio needs",
        ),
    ],
)
def test_untranslatable_messages_are_400(messages, fragment):
    with pytest.raises(ApiError) as exc:
        translate({"messages": messages})
    assert exc.value.status == 400 and fragment in exc.value.body.message


def test_vertex_takes_https_image_urls_as_file_data():
    vertex = GeminiAdapter("vertex", "https://x", tokens=None)
    _, out = translate(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "https://e.com/a/cat.jpg?x=1"}}],
                }
            ]
        },
        vertex,
    )
    assert out["contents"][0]["parts"] == [
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://e.com/a/cat.jpg?x=1"}}
    ]


def test_stream_with_n_above_one_is_refused():
    with pytest.raises(ApiError):
        translate({"messages": [{"role": "user", "content": "x"}], "n": 2, "stream": True})


# -- response translation (table-driven) ---------------------------------------------------

USAGE = {
    "promptTokenCount": 10,
    "candidatesTokenCount": 4,
    "cachedContentTokenCount": 3,
    "thoughtsTokenCount": 2,
    "totalTokenCount": 16,
}


def cand(parts, finish="STOP", index=0):
    c = {"finishReason": finish, "index": index}
    if parts is not None:
        c["content"] = {"role": "model", "parts": parts}
    return c


RESPONSE_CASES = [
    (
        "text",
        {"candidates": [cand([{"text": "Hel"}, {"text": "lo"}])], "usageMetadata": USAGE},
        {"content": "Hello", "finish_reason": "stop", "tool_calls": None},
    ),
    (
        "thought parts are not answer text",
        {"candidates": [cand([{"text": "hmm", "thought": True}, {"text": "Hi"}])]},
        {"content": "Hi", "finish_reason": "stop"},
    ),
    (
        "max tokens",
        {"candidates": [cand([{"text": "Hel"}], "MAX_TOKENS")]},
        {"content": "Hel", "finish_reason": "length"},
    ),
    (
        "function calls turn STOP into tool_calls",
        {
            "candidates": [
                cand([{"functionCall": {"name": "f", "args": {"a": 1}}}, {"functionCall": {"name": "g", "args": {}}}])
            ]
        },
        {"content": None, "finish_reason": "tool_calls", "tool_names": ["f", "g"], "tool_args": ['{"a":1}', "{}"]},
    ),
    (
        "safety",
        {"candidates": [cand(None, "SAFETY")]},
        {"content": None, "finish_reason": "content_filter", "refusal": True},
    ),
    (
        "recitation",
        {"candidates": [cand([{"text": "partial"}], "RECITATION")]},
        {"content": "partial", "finish_reason": "content_filter"},
    ),
    (
        "prompt blocked",
        {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 5}},
        {"content": None, "finish_reason": "content_filter", "refusal": True},
    ),
]


@pytest.mark.parametrize("name,body,expected", RESPONSE_CASES, ids=[c[0] for c in RESPONSE_CASES])
def test_response_translation(name, body, expected):
    out = json.loads(gem().chat_response(json.dumps(body).encode(), "gemini-2.5-flash"))
    msg = out["choices"][0]["message"]
    assert out["choices"][0]["finish_reason"] == expected["finish_reason"]
    assert msg["content"] == expected["content"]
    if "tool_names" in expected:
        assert [c["function"]["name"] for c in msg["tool_calls"]] == expected["tool_names"]
        assert [json.loads(c["function"]["arguments"]) for c in msg["tool_calls"]] == [
            json.loads(a) for a in expected["tool_args"]
        ]
        ids = [c["id"] for c in msg["tool_calls"]]
        assert all(i.startswith("call_") for i in ids) and len(set(ids)) == len(ids)
    if expected.get("refusal"):
        assert msg["refusal"]
    if "usageMetadata" in body and body["usageMetadata"] is USAGE:
        assert out["usage"] == {
            "prompt_tokens": 10,
            "completion_tokens": 6,
            "total_tokens": 16,
            "prompt_tokens_details": {"cached_tokens": 3},
            # thoughtsTokenCount (2) is in completion_tokens, billed as output, and named as reasoning
            "completion_tokens_details": {"reasoning_tokens": 2},
        }


def test_response_keeps_gemini_function_call_id():
    body = {"candidates": [cand([{"functionCall": {"id": "fc-1", "name": "f", "args": {}}}])]}
    out = json.loads(gem().chat_response(json.dumps(body).encode(), "m"))
    assert out["choices"][0]["message"]["tool_calls"][0]["id"] == "fc-1"


def test_several_candidates_become_several_choices():
    body = {"candidates": [cand([{"text": "one"}], index=0), cand([{"text": "two"}], "MAX_TOKENS", index=1)]}
    out = json.loads(gem().chat_response(json.dumps(body).encode(), "m"))
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in out["choices"]] == [
        (0, "one", "stop"),
        (1, "two", "length"),
    ]
    assert len({out["id"]}) == 1


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"candidates": []}', json.dumps({"candidates": [cand([], "MALFORMED_FUNCTION_CALL")]}).encode()],
)
def test_unusable_2xx_bodies_raise_value_error(body):
    with pytest.raises(ValueError):
        gem().chat_response(body, "m")


# -- streaming ------------------------------------------------------------------------------


def sse(*chunks: dict) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)


def run_decoder(data: bytes, piece: int = 7) -> list:
    dec = GeminiStreamDecoder("m")
    payloads = []
    for i in range(0, len(data), piece):  # arbitrary network boundaries
        payloads += dec.feed(data[i : i + piece])
    payloads += dec.end()
    return [p if p == b"[DONE]" else json.loads(p) for p in payloads]


def tool_deltas(payloads) -> list[dict]:
    return [
        tc
        for p in payloads
        if isinstance(p, dict)
        for c in p.get("choices", [])
        for tc in c["delta"].get("tool_calls", [])
    ]


def test_stream_text_finish_usage_done():
    out = run_decoder(
        sse(
            {"candidates": [cand([{"text": "Hel"}], None)], "usageMetadata": {"promptTokenCount": 3}},
            {"candidates": [cand([{"text": "lo"}], "STOP")], "usageMetadata": USAGE},
        )
    )
    assert out[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(p["choices"][0]["delta"].get("content") or "" for p in out[1:-2]) == "Hello"
    assert out[-3]["choices"][0]["finish_reason"] == "stop"
    assert out[-2]["choices"] == [] and out[-2]["usage"]["completion_tokens"] == 6
    assert out[-1] == b"[DONE]"


@pytest.mark.parametrize("layout", ["one chunk", "across chunks"])
def test_stream_function_calls_get_indices_in_order(layout):
    calls = [{"functionCall": {"name": n, "args": {"i": i}}} for i, n in enumerate(["a", "b", "c"])]
    if layout == "one chunk":
        data = sse({"candidates": [cand(calls, "STOP")]})
    else:
        data = sse(
            {"candidates": [cand(calls[:2], None)]},
            {"candidates": [cand(calls[2:], None)]},
            {"candidates": [cand([{"text": ""}], "STOP")]},
        )
    out = run_decoder(data)
    deltas = tool_deltas(out)
    starts = [(d["index"], d["function"]["name"]) for d in deltas if "id" in d]
    args = {d["index"]: json.loads(d["function"]["arguments"]) for d in deltas if "id" not in d}
    assert starts == [(0, "a"), (1, "b"), (2, "c")]
    assert args == {0: {"i": 0}, 1: {"i": 1}, 2: {"i": 2}}
    assert [
        p["choices"][0]["finish_reason"]
        for p in out
        if isinstance(p, dict) and p["choices"] and p["choices"][0]["finish_reason"]
    ] == ["tool_calls"]


def test_stream_without_finish_reason_is_incomplete():
    out = run_decoder(sse({"candidates": [cand([{"text": "Hel"}], None)]}))
    assert b"[DONE]" not in out


def test_stream_prompt_block_is_a_refusal():
    out = run_decoder(sse({"promptFeedback": {"blockReason": "SAFETY"}}))
    assert any(p["choices"][0]["delta"].get("refusal") for p in out[1:-2])
    assert out[-3]["choices"][0]["finish_reason"] == "content_filter" and out[-1] == b"[DONE]"


def test_stream_corrupt_event_raises_value_error():
    dec = GeminiStreamDecoder("m")
    with pytest.raises(ValueError):
        dec.feed(b"data: {not json\r\n\r\n")


def test_stream_events_before_a_corrupt_one_are_delivered_first():
    dec = GeminiStreamDecoder("m")
    good = sse({"candidates": [cand([{"text": "Hi"}], None)]})
    out = dec.feed(good + b"data: {not json\r\n\r\n")
    assert json.loads(out[-1])["choices"][0]["delta"]["content"] == "Hi"
    with pytest.raises(ValueError):
        dec.end()


def test_stream_error_event_becomes_openai_error():
    out = run_decoder(sse({"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}))
    assert out[0]["error"]["code"] == "unavailable"


# -- errors ---------------------------------------------------------------------------------


def gerr(code: int, status: str, message: str = "m", details=None) -> bytes:
    return json.dumps(
        {"error": {"code": code, "message": message, "status": status, "details": details or []}}
    ).encode()


ERROR_CASES = [
    (
        429,
        {},
        gerr(
            429,
            "RESOURCE_EXHAUSTED",
            details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}],
        ),
        CAPACITY,
        "http_429",
        1.5,
    ),
    (429, {"retry-after": "3"}, gerr(429, "RESOURCE_EXHAUSTED"), CAPACITY, "http_429", 3.0),
    (500, {}, gerr(500, "INTERNAL"), UNAVAILABLE, "http_500", None),
    (503, {}, gerr(503, "UNAVAILABLE"), UNAVAILABLE, "http_503", None),
    (504, {}, gerr(504, "DEADLINE_EXCEEDED"), UNAVAILABLE, "http_504", None),
    (
        400,
        {},
        gerr(
            400,
            "INVALID_ARGUMENT",
            "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
        ),
        CONTEXT_OVERFLOW,
        "context_overflow",
        None,
    ),
    (400, {}, gerr(400, "INVALID_ARGUMENT"), CLIENT_ERROR, "http_400", None),
    (
        400,
        {},
        gerr(400, "FAILED_PRECONDITION", "User location is not supported for the API use."),
        UNAVAILABLE,
        "http_400",
        None,
    ),
    (401, {}, gerr(401, "UNAUTHENTICATED"), CLIENT_ERROR, "http_401", None),
    (403, {}, gerr(403, "PERMISSION_DENIED"), CLIENT_ERROR, "http_403", None),
    (404, {}, gerr(404, "NOT_FOUND"), CLIENT_ERROR, "http_404", None),
]


@pytest.mark.parametrize("status,headers,body,kind,label,retry", ERROR_CASES)
def test_classify_error(status, headers, body, kind, label, retry):
    c = gem().classify_error(status, headers, body)
    assert (c.kind, c.label, c.retry_after) == (kind, label, retry)


def test_client_error_body_in_openai_envelope():
    body = gem().client_error_body(
        400,
        gerr(400, "INVALID_ARGUMENT", "The input token count (9) exceeds the maximum number of tokens allowed (8)."),
    )
    assert json.loads(body)["error"]["code"] == "context_length_exceeded"


# -- embeddings -----------------------------------------------------------------------------


def test_gemini_embeddings_round_trip_float_and_base64():
    a = gem()
    parsed = parse_embeddings(
        json.dumps({"model": "e", "input": ["a", "b"], "dimensions": 2, "encoding_format": "base64"}).encode()
    )

    async def run():
        req = await a.embeddings_request(parsed, "text-embedding-004")
        return req, a.embeddings_response(
            json.dumps({"embeddings": [{"values": [0.5, 1.0]}, {"values": [2.0, 0.25]}]}).encode(),
            "text-embedding-004",
            {},
        )

    req, body = asyncio.run(run())
    assert req.url.endswith("/v1beta/models/text-embedding-004:batchEmbedContents")
    assert json.loads(req.body) == {
        "requests": [
            {"model": "models/text-embedding-004", "outputDimensionality": 2, "content": {"parts": [{"text": "a"}]}},
            {"model": "models/text-embedding-004", "outputDimensionality": 2, "content": {"parts": [{"text": "b"}]}},
        ]
    }
    data = json.loads(body)["data"]
    assert struct.unpack("<2f", base64.b64decode(data[1]["embedding"])) == (2.0, 0.25)
    float_body = a.embeddings_response(json.dumps({"embeddings": [{"values": [0.5]}]}).encode(), "m", {})
    assert json.loads(float_body)["data"][0]["embedding"] == [0.5]  # outside the request's context: float


def test_vertex_embeddings_use_predict_and_report_tokens():
    v = GeminiAdapter("vertex", "https://x", tokens=None)
    v.resource = "v1/projects/p/locations/l"
    req = asyncio.run(
        v.embeddings_request(parse_embeddings(b'{"model":"e","input":"hi","dimensions":3}'), "text-embedding-005")
    )
    assert req.url == "https://x/v1/projects/p/locations/l/publishers/google/models/text-embedding-005:predict"
    assert json.loads(req.body) == {"instances": [{"content": "hi"}], "parameters": {"outputDimensionality": 3}}
    body = {
        "predictions": [
            {"embeddings": {"values": [1.0, 0.0, 0.0], "statistics": {"token_count": 2, "truncated": False}}}
        ]
    }
    out = json.loads(v.embeddings_response(json.dumps(body).encode(), "text-embedding-005", {}))
    assert out["data"][0]["embedding"] == [1.0, 0.0, 0.0] and out["usage"]["prompt_tokens"] == 2


def test_vertex_gemini_embedding_fans_out_one_instance_per_request():
    v = GeminiAdapter("vertex", "https://x", tokens=None)
    v.resource = "v1/projects/p/locations/l"
    parsed = parse_embeddings(b'{"model":"e","input":["a","b","c"],"dimensions":2}')
    req = asyncio.run(v.embeddings_request(parsed, "gemini-embedding-001"))
    assert req.url.endswith("/publishers/google/models/gemini-embedding-001:predict") and req.join is not None
    assert [json.loads(b) for b in req.fan_out] == [
        {"instances": [{"content": t}], "parameters": {"outputDimensionality": 2}} for t in "abc"
    ]
    answers = [
        json.dumps(
            {"predictions": [{"embeddings": {"values": [float(i), 0.0], "statistics": {"token_count": i + 1}}}]}
        ).encode()
        for i in range(3)
    ]
    out = json.loads(v.embeddings_response(req.join(answers), "gemini-embedding-001", {}))
    assert [d["embedding"][0] for d in out["data"]] == [0.0, 1.0, 2.0] and out["usage"]["prompt_tokens"] == 6
    # One input, or a model that takes a list, is one request as before.
    single = asyncio.run(v.embeddings_request(parse_embeddings(b'{"model":"e","input":["a"]}'), "gemini-embedding-001"))
    listed = asyncio.run(
        v.embeddings_request(parse_embeddings(b'{"model":"e","input":["a","b"]}'), "text-embedding-005")
    )
    assert single.fan_out == [] and listed.fan_out == [] and len(json.loads(listed.body)["instances"]) == 2


def test_more_than_five_stop_sequences_are_refused_before_the_call():
    from multihome.providers.gemini.request import generation_config

    req = parse_chat(json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()).request
    req.stop = ["1", "2", "3", "4", "5", "6"]
    with pytest.raises(ApiError) as err:
        generation_config(req, {})
    assert err.value.status == 400 and err.value.body.param == "stop"
    req.stop = ["1", "2", "3", "4", "5"]
    assert generation_config(req, {})["stopSequences"] == ["1", "2", "3", "4", "5"]


def test_token_arrays_are_refused_for_embeddings():
    with pytest.raises(ApiError):
        asyncio.run(gem().embeddings_request(parse_embeddings(b'{"model":"e","input":[1,2,3]}'), "m"))


# -- OAuth token cache ----------------------------------------------------------------------


class _FakeCredentials:
    """Stands in for google-auth credentials (the real exchange is covered end to end)."""

    def __init__(self, lifetime_s: float) -> None:
        import datetime

        self.lifetime_s = lifetime_s
        self.calls = 0
        self.threads = set()
        self.token = None
        self.expiry = None
        self._dt = datetime

    def refresh(self, request) -> None:
        import threading

        time.sleep(0.05)
        self.calls += 1
        self.threads.add(threading.get_ident())
        self.token = f"tok-{self.calls}"
        self.expiry = self._dt.datetime.now(self._dt.timezone.utc).replace(tzinfo=None) + self._dt.timedelta(
            seconds=self.lifetime_s
        )


def test_tokens_refresh_once_off_the_loop_and_again_near_expiry():
    import threading

    tokens = gemini_auth.GoogleTokens(GoogleAuth(), "t")
    creds = _FakeCredentials(3600)
    tokens._credentials = creds

    async def run():
        return await asyncio.gather(*(tokens.bearer() for _ in range(20)))

    assert set(asyncio.run(run())) == {"tok-1"}
    assert creds.calls == 1 and threading.get_ident() not in creds.threads
    creds.lifetime_s = 10  # shorter than the refresh margin: the next call refreshes
    tokens._expires_at = time.time() + gemini_auth.REFRESH_MARGIN_S - 1
    assert asyncio.run(tokens.bearer()) == "tok-2"
