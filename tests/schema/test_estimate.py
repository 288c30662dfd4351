"""The prompt estimate and what admission reserves for: the hot path's forms give the same numbers as
the plain reading of the rule (four characters a token, four tokens a message, images a flat amount)."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from multihome.schema import estimate
from multihome.schema.chat import (
    ChatRequest,
    ContentPart,
    FunctionCall,
    FunctionDef,
    ImageUrl,
    Message,
    Tool,
    ToolCall,
)
from multihome.schema.embeddings import EmbeddingsRequest


def _reference(req: ChatRequest) -> int:
    """The estimate as the rule reads, message by message."""
    chars = tokens = 0
    for msg in req.messages:
        tokens += estimate.PER_MESSAGE_TOKENS
        if isinstance(msg.content, str):
            chars += len(msg.content)
        elif msg.content:
            for part in msg.content:
                if part.text:
                    chars += len(part.text)
                elif part.type == "image_url":
                    tokens += estimate.IMAGE_TOKENS
                elif part.type == "input_audio":
                    tokens += 1 + len(part.input_audio) // estimate.AUDIO_CHARS_PER_TOKEN
                elif part.type == "file":
                    tokens += max(estimate.FILE_TOKENS, len(part.file) // estimate.FILE_CHARS_PER_TOKEN)
        for call in msg.tool_calls or ():
            chars += len(call.function.name) + len(call.function.arguments)
    for tool in req.tools or ():
        if tool.function is not None:
            f = tool.function
            chars += len(f.name) + len(f.description or "") + len(f.parameters)
    return tokens + chars // estimate.CHARS_PER_TOKEN


def _audio(size: int) -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode({"data": "A" * size, "format": "mp3"}))


def _file(size: int) -> msgspec.Raw:
    data = "data:application/pdf;base64," + "A" * size
    return msgspec.Raw(msgspec.json.encode({"filename": "a.pdf", "file_data": data}))


_text = st.text(max_size=30)
_part = st.one_of(
    st.builds(ContentPart, type=st.just("text"), text=_text),
    st.builds(ContentPart, type=st.just("image_url"), image_url=st.just(ImageUrl(url="https://x/y.png"))),
    st.builds(ContentPart, type=st.just("input_audio")),
    st.builds(ContentPart, type=st.just("input_audio"), input_audio=st.integers(0, 5000).map(_audio)),
    st.builds(ContentPart, type=st.just("file"), file=st.integers(0, 90_000).map(_file)),
)
_call = st.builds(ToolCall, id=st.just("c1"), function=st.builds(FunctionCall, name=_text, arguments=_text))
_message = st.builds(
    Message,
    role=st.sampled_from(["user", "assistant", "tool"]),
    content=st.one_of(st.none(), _text, st.lists(_part, max_size=3)),
    tool_calls=st.one_of(st.none(), st.lists(_call, max_size=2)),
)
_tool = st.one_of(
    st.builds(Tool, type=st.just("custom")),
    st.builds(
        Tool,
        type=st.just("function"),
        function=st.builds(
            FunctionDef,
            name=_text,
            description=st.one_of(st.none(), _text),
            parameters=st.binary(max_size=20).map(lambda b: msgspec.Raw(b"0" * len(b))),
        ),
    ),
)
_counts = st.one_of(st.none(), st.integers(1, 8))
_chat = st.builds(
    ChatRequest,
    model=st.just("m"),
    messages=st.lists(_message, max_size=4),
    tools=st.one_of(st.none(), st.lists(_tool, max_size=3)),
    n=_counts,
    best_of=_counts,
)


@settings(max_examples=300, deadline=None)
@given(_chat)
def test_the_prompt_estimate_is_the_rules_reading(req):
    assert estimate.prompt_tokens(req) == _reference(req)


@settings(max_examples=200, deadline=None)
@given(_chat)
def test_admission_is_the_input_estimate_and_the_choices(req):
    assert estimate.admission(req) == (estimate.input_tokens(req), estimate.choices(req))
    n, best_of = req.n, req.best_of
    assert estimate.admission(req)[1] == max(n or 1, best_of or 1)


def test_admission_of_embeddings_and_of_no_request():
    texts = EmbeddingsRequest(model="e", input=["abcdefgh", "abc"])
    assert estimate.admission(texts) == (estimate.input_tokens(texts), 1) == (3, 1)
    assert estimate.admission(EmbeddingsRequest(model="e", input=[1, 2, 3])) == (3, 1)
    assert estimate.admission(None) == (0, 1)


def _prompt(part: dict) -> int:
    """The estimate of a one-message prompt holding `part` (as the front door decodes it)."""
    from multihome.schema.chat import parse_chat

    body = {"model": "m", "messages": [{"role": "user", "content": [part]}]}
    return estimate.prompt_tokens(parse_chat(msgspec.json.encode(body)).request)


def test_audio_and_files_count_by_their_data_never_nothing():
    """A prompt of audio or a file is what admission reserves a budget for: counted as nothing, a tenant
    could send any amount of it against a reservation for an empty prompt."""
    minute_mp3 = "A" * (4 * 128_000 * 60 // 8 // 3)  # base64 of a minute of 128 kbit/s MP3 (~1.3 MB)
    clip = {"data": minute_mp3, "format": "mp3"}
    audio = _prompt({"type": "input_audio", "input_audio": clip})
    assert audio >= 600 + estimate.PER_MESSAGE_TOKENS  # models bill ~10 tokens a second of audio
    size = len(msgspec.json.encode(clip))  # the part's JSON, as sent
    assert audio == estimate.PER_MESSAGE_TOKENS + 1 + size // estimate.AUDIO_CHARS_PER_TOKEN
    pdf = "data:application/pdf;base64," + "A" * 4_000_000  # a 3 MB PDF
    big = _prompt({"type": "file", "file": {"filename": "report.pdf", "file_data": pdf}})
    assert big >= 100_000
    by_id = _prompt({"type": "file", "file": {"file_id": "file-abc"}})
    assert by_id == estimate.PER_MESSAGE_TOKENS + estimate.FILE_TOKENS
