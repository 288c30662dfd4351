"""What a call's usage record says when the provider reports none, or reports zero for real input."""

from __future__ import annotations

import pytest

from multihome.accounting.tracker import Accounting
from multihome.schema.chat import parse_chat
from multihome.schema.embeddings import parse_embeddings
from multihome.schema.peek import Usage as Reported
from multihome.schema.principal import Principal


class Sink:
    def __init__(self) -> None:
        self.records = []

    def record(self, call) -> None:
        self.records.append(call)


def finished(request, usage, content_chars=0):
    sink = Sink()
    tracker = Accounting([sink]).begin("r1", "embeddings", Principal(tenant="t", subject="k", source="api_key"), b"{}")
    tracker.request = request
    tracker.finish(200, "ok", usage=usage, content_chars=content_chars)
    return sink.records[0].usage


EMBED = parse_embeddings(b'{"model": "m", "input": ["twelve chars", "and sixteen more"]}').request


def test_reported_usage_is_kept_as_is():
    u = finished(EMBED, Reported(prompt_tokens=9, total_tokens=9))
    assert (u.prompt_tokens, u.completion_tokens, u.estimated) == (9, 0, False)


@pytest.mark.parametrize("usage", [None, Reported()], ids=["absent", "zero"])
def test_embeddings_without_a_count_are_estimated_from_the_input(usage):
    # The Gemini API's batch embeddings report no token count; the call is not free.
    u = finished(EMBED, usage)
    assert (u.prompt_tokens, u.estimated) == (3 + 4, True)  # ceil(12/4) + ceil(16/4)


def test_token_id_inputs_count_exactly():
    ids = parse_embeddings(b'{"model": "m", "input": [[1, 2, 3], [4, 5]]}').request
    assert finished(ids, None).prompt_tokens == 5
    one = parse_embeddings(b'{"model": "m", "input": [7, 8, 9, 10]}').request
    assert finished(one, None).prompt_tokens == 4


def test_a_chat_without_usage_is_estimated_from_prompt_and_answer():
    chat = parse_chat(b'{"model": "m", "messages": [{"role": "user", "content": "' + b"x" * 400 + b'"}]}').request
    u = finished(chat, None, content_chars=80)
    assert (u.prompt_tokens, u.completion_tokens, u.estimated) == (4 + 100, 20, True)


class _Adapter:
    kind = "openai"


class _Dep:
    name, provider, region, data_zone, adapter = "d@p", "p", None, None, _Adapter()


def produced(request, answer: bytes):
    """A unary answer an upstream gave, finished as the front door does (finish_produced)."""
    import msgspec

    from multihome.routing.attempts import Served
    from multihome.schema.peek import ResponsePeek

    sink = Sink()
    tracker = Accounting([sink]).begin("r1", "chat", Principal(tenant="t", subject="k", source="api_key"), b"{}")
    tracker.request = request
    served = Served(_Dep(), 200, [], body=answer, peek=msgspec.json.decode(answer, type=ResponsePeek))
    tracker.finish_produced(served, 200, "ok")
    return sink.records[0]


def test_a_unary_answer_is_charged_its_usage_or_else_its_characters():
    chat = parse_chat(b'{"model": "m", "messages": [{"role": "user", "content": "' + b"x" * 40 + b'"}]}').request
    message = b'"message": {"content": "' + b"y" * 80 + b'", "tool_calls": [{"id": "c1", "function": {"name": "f"}}]}'
    usage = (
        b'"usage": {"prompt_tokens": 7, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 9},'
        b' "completion_tokens_details": {"reasoning_tokens": 8}}'
    )
    reported = produced(chat, b'{"choices": [{' + message + b"}], " + usage + b"}")
    u = reported.usage
    # cached within prompt, reasoning within completion: clamped, never added
    assert (u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.reasoning_tokens, u.estimated) == (
        7,
        5,
        7,
        5,
        False,
    )
    assert reported.tool_calls == (("f", "c1"),) and reported.deployment == "d@p"
    estimated = produced(chat, b'{"choices": [{' + message + b"}]}")
    u = estimated.usage
    assert (u.prompt_tokens, u.completion_tokens, u.estimated) == (4 + 10, 20, True)
    assert estimated.tool_calls == (("f", "c1"),)


@pytest.mark.parametrize(
    "reported, expected",
    [
        ((-5, 3, -1, -2), (0, 3, 0, 0)),  # no credit: never negative
        ((2**40, 2**40, 2**41, 2**42), (2**31 - 1, 2**31 - 1, 2**31 - 1, 2**31 - 1)),  # within the columns
        ((10, 4, None, None), (10, 4, 0, 0)),
    ],
)
def test_counts_are_clamped_to_what_the_books_hold(reported, expected):
    from multihome.schema.peek import CompletionDetails, PromptDetails

    prompt, completion, cached, reasoning = reported
    usage = Reported(
        prompt_tokens=prompt,
        completion_tokens=completion,
        prompt_tokens_details=PromptDetails(cached_tokens=cached),
        completion_tokens_details=CompletionDetails(reasoning_tokens=reasoning),
    )
    u = finished(EMBED, usage)
    assert (u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.reasoning_tokens) == expected


def test_every_field_of_the_record_is_the_calls():
    """The tracker makes its CallRecord positionally (in the struct's field order): each field by name."""
    from multihome.accounting.record import AttemptRecord
    from multihome.routing.attempts import Attempt, Served

    sink = Sink()
    acc = Accounting([sink])
    who = Principal(tenant="ten", subject="sub", source="oidc", team="team", key_id="key")
    tracker = acc.begin("req", "chat", who, b"{}")
    tracker.request = EMBED
    tracker.model_group, tracker.policy_code, tracker.entitlement_id = "grp", "pol", "ent"
    tracker.traceparent, tracker.tracestate = b"00-tp", b"ts=1"

    class Dep(_Dep):
        region, data_zone = "reg", "zone"

    served = Served(Dep(), 200, [Attempt("other", "http_503", 1.23456, "busy"), Attempt("d@p", "ok", 2.0)])
    usage = Reported(prompt_tokens=3, completion_tokens=2)
    tracker.finish(
        201,
        "ok",
        served=served,
        usage=usage,
        tool_calls=[("f", "c1")],
        response_sha256="resp",
        first_byte_ms=4.5,
        error_code="err",
    )
    (r,) = sink.records
    assert (r.request_id, r.endpoint, r.tenant, r.subject, r.principal_source, r.team, r.key_id) == (
        "req", "chat", "ten", "sub", "oidc", "team", "key"
    )  # fmt: skip
    assert (r.model_group, r.deployment, r.provider, r.provider_kind, r.region, r.data_zone) == (
        "grp", "d@p", "p", "openai", "reg", "zone"
    )  # fmt: skip
    assert r.attempts == (AttemptRecord("other", "http_503", 1.235, "busy"), AttemptRecord("d@p", "ok", 2.0, None))
    assert (r.stream, r.status, r.outcome, r.error_code, r.first_byte_ms) == (False, 201, "ok", "err", 4.5)
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (3, 2)
    assert (r.policy_code, r.entitlement_id, r.tool_calls) == ("pol", "ent", (("f", "c1"),))
    assert (r.request_sha256, r.response_sha256) == (tracker.request_sha256, "resp") and len(r.request_sha256) == 64
    assert (r.traceparent, r.tracestate) == ("00-tp", "ts=1")
    assert 0 < r.started_at <= r.finished_at and r.latency_ms >= 0
