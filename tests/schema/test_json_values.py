"""A large body of more JSON values than json_values.MAX_VALUES is refused (413) from its bytes, before any
decoder reads it: a flat array of millions of tiny values (embeddings token ids, chat `stop`, a tool's
`enum`) held the event loop 60-110 ms in one decoder call, however the body was then refused
(docs/hostile-input.md). Legitimate large bodies (long texts full of commas and escaped quotes, OpenAI's
largest embeddings batch) are not."""

import json
import random

import msgspec
import pytest

from multihome.schema import anthropic as anthropic_schema
from multihome.schema import bounds, chat, decoding, embeddings, json_values, responses
from multihome.schema.anthropic import parse_messages
from multihome.schema.chat import parse_chat
from multihome.schema.embeddings import parse_embeddings
from multihome.schema.errors import ApiError
from multihome.schema.responses import parse_add_items, parse_create

MANY = json_values.MAX_VALUES + 1
MESSAGE = {"role": "user", "content": "hi"}


def _with(enum: list) -> dict:
    return {"type": "object", "properties": {"p": {"type": "string", "enum": enum}}}


HOSTILE = {
    "embeddings token ids": (parse_embeddings, {"model": "m", "input": [1] * MANY}),
    "embeddings token lists": (parse_embeddings, {"model": "m", "input": [[1] * 1000] * (MANY // 1000 + 1)}),
    "embeddings strings": (parse_embeddings, {"model": "m", "input": [""] * MANY}),
    "chat stop": (parse_chat, {"model": "m", "messages": [MESSAGE], "stop": [""] * MANY}),
    "chat logit_bias": (
        parse_chat,
        {"model": "m", "messages": [MESSAGE], "logit_bias": {str(i): 1 for i in range(MANY)}},
    ),
    "chat tool enum": (
        parse_chat,
        {
            "model": "m",
            "messages": [MESSAGE],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": _with([0] * MANY)}}],
        },
    ),
    "chat tiny parts": (
        parse_chat,
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": ""}] * (MANY // 2)}]},
    ),
    "responses include": (parse_create, {"model": "m", "input": "hi", "include": [""] * MANY}),
    "responses tool enum": (
        parse_create,
        {"model": "m", "input": "hi", "tools": [{"type": "function", "name": "f", "parameters": _with([""] * MANY)}]},
    ),
    "anthropic stop_sequences": (
        parse_messages,
        {"model": "m", "max_tokens": 5, "messages": [MESSAGE], "stop_sequences": [""] * MANY},
    ),
    "conversation items": (parse_add_items, {"items": [{"type": "message", "role": "user", "content": [0] * MANY}]}),
}


class _Refusing:
    """A decoder that must not be reached."""

    def decode(self, body):
        raise AssertionError("a decoder read the body")


@pytest.fixture
def no_decoder(monkeypatch):
    for module, name in (
        (decoding, "_top"),
        (chat, "_typed"),
        (chat, "_translated"),
        (embeddings, "_typed"),
        (responses, "_create"),
        (responses, "_add_items"),
        (anthropic_schema, "_typed"),
    ):
        monkeypatch.setattr(module, name, _Refusing())


@pytest.mark.parametrize("case", HOSTILE)
def test_a_body_of_too_many_values_is_a_413_before_any_decode(case, no_decoder):
    parse, body = HOSTILE[case]
    with pytest.raises(ApiError) as info:
        parse(msgspec.json.encode(body))
    err = info.value
    assert (err.status, err.body.code, err.body.type) == (413, "too_many_values", "invalid_request_error")
    assert f"more than {json_values.MAX_VALUES:,} JSON values" in err.body.message


def test_openais_largest_embeddings_batch_is_taken_and_one_token_more_is_its_400():
    # 2,048 inputs of 146 tokens (299,008) and one of 992: 300,000 tokens, OpenAI's limit per request.
    ids = [[100_000 + i % 50_000 for i in range(146)]] * 2047 + [[7] * (bounds.MAX_EMBEDDING_TOKENS - 2047 * 146)]
    parsed = parse_embeddings(msgspec.json.encode({"model": "m", "input": ids}))
    assert sum(map(len, parsed.request.input)) == bounds.MAX_EMBEDDING_TOKENS
    ids[-1] = [*ids[-1], 7]
    with pytest.raises(ApiError) as info:
        parse_embeddings(msgspec.json.encode({"model": "m", "input": ids}))
    err = info.value
    assert (err.status, err.body.param, err.body.code) == (400, "input", "max_tokens_per_request")
    assert err.body.message == "Requested 300001 tokens, max 300000 tokens per request."


@pytest.mark.parametrize(
    "text",
    [
        "a, b, [c], {d}, " * 1_000_000,  # commas and brackets inside a string are not values
        json.dumps([{"a": [1, 2], "b": 'say "hi", \\ "x"'}] * 200_000),  # JSON inside a string: escaped quotes
        '\\"' * 1_000_000 + "\\" * 1001 + ",[{" * 500_000,  # runs of backslashes across the scan's slices
    ],
    ids=["commas", "json in a string", "backslashes"],
)
def test_long_texts_of_commas_brackets_and_escapes_are_taken(text):
    body = msgspec.json.encode({"model": "m", "messages": [{"role": "tool", "tool_call_id": "t", "content": text}]})
    assert len(body) > json_values.SCAN_OVER and body.count(b",") > json_values.MAX_VALUES
    assert parse_chat(body).request.messages[0].content == text


def test_the_cap_itself_is_taken():
    # `[0,0,...]`: one `[` and a `,` between each two values; under the body `{"stop": ...}` one `{`.
    def body(marks: int) -> bytes:
        return b'{"stop":[' + b",".join([b"0"] * (marks - 1)) + b"]}"

    json_values.check_values(body(json_values.MAX_VALUES))
    with pytest.raises(ApiError):
        json_values.check_values(body(json_values.MAX_VALUES + 1))


def _reference(body: bytes) -> int:
    """`,` `[` `{` outside strings, byte by byte."""
    inside = escaped = False
    found = 0
    for c in body.decode():
        if inside:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                inside = False
        elif c == '"':
            inside = True
        elif c in ",[{":
            found += 1
    return found


def _value(rng: random.Random, depth: int = 0):
    pick = rng.random()
    if depth > 4 or pick < 0.3:
        return rng.choice([1, "a,b", '\\"x\\', "\\\\", '"{[,', "", "é\n", "\\" * rng.randint(0, 7) + '"'])
    if pick < 0.65:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {rng.choice(["k", "\\", '"', ",{"]) + str(i): _value(rng, depth + 1) for i in range(rng.randint(0, 4))}


@pytest.mark.parametrize("slice_bytes", [1, 2, 3, 7, 64])
def test_the_scan_counts_what_a_parser_would_whatever_its_slices(slice_bytes, monkeypatch):
    monkeypatch.setattr(json_values, "SLICE", slice_bytes)
    rng = random.Random(slice_bytes)
    for _ in range(500):
        body = json.dumps(_value(rng), ensure_ascii=rng.random() < 0.5).encode()
        assert json_values.marks(body, 10**9) == _reference(body), body


def test_a_body_short_enough_to_skip_the_count_is_short_enough_to_skip_the_scan():
    # decode_views calls the scan only for a body it counts (the chat path's small bodies pay no call).
    assert json_values.SCAN_OVER >= decoding.COUNT_ITEMS_OVER


class _Watched(bytes):
    """A body that records the length of every slice taken of it."""

    taken: list[int]

    def __getitem__(self, key):
        if isinstance(key, slice):
            self.taken.append(len(range(*key.indices(len(self)))))
        return super().__getitem__(key)


@pytest.mark.parametrize("run", [10_000, 10_001], ids=["even", "odd"])
def test_a_run_of_backslashes_is_scanned_in_slices_like_any_text(run, monkeypatch):
    # It was taken in one piece to the run's end (a 29 MiB body of backslashes: one piece, ~600 ms of the GIL).
    monkeypatch.setattr(json_values, "SLICE", 64)
    text = b'{"a":"' + b"\\" * run + (b'"' if run % 2 else b"") + b'","b":[1,{"c":2}]}'
    body = _Watched(text)
    body.taken = []
    assert json_values.marks(body, 10**9) == _reference(text) == 5
    assert max(body.taken) <= 64 + 1
