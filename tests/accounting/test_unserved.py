"""An upstream answer the call got and did not serve (a 200 refusal failed over from, a hedge's loser) is
charged however the call ends: served by another deployment, declined everywhere, or ended while routing
still walked (the request task cancelled, a drain): the tracker reads the walk's own attempts then."""

from __future__ import annotations

from types import SimpleNamespace

import msgspec

from multihome.accounting.tracker import Accounting, settle
from multihome.routing.attempts import Attempt
from multihome.schema.peek import peek_decoder
from multihome.schema.principal import Principal

REFUSED = msgspec.json.encode(
    {
        "id": "c",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "no"}, "finish_reason": "content_filter"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }
)
DEP = SimpleNamespace(
    name="filtered", provider="up", adapter=SimpleNamespace(kind="openai"), region=None, data_zone=None
)


class Sink:
    def __init__(self) -> None:
        self.calls: list = []

    def record(self, call) -> None:
        self.calls.append(call)


def _tracker(sink: Sink):
    acc = Accounting([sink])
    tracker = acc.begin("req_1", "chat", Principal(tenant="t", subject="s", source="static"), b"{}", "g")
    assert tracker is not None
    return tracker


def test_a_call_ended_while_routing_walked_is_charged_for_the_refusal_it_got():
    sink = Sink()
    tracker = _tracker(sink)
    refused = Attempt("filtered", "content_filter", 5.0, billed=(DEP, peek_decoder.decode(REFUSED)))
    tracker.walked = [refused]  # refused, and the task was cancelled before the next deployment began
    settle(tracker)
    by_id = {c.request_id: c for c in sink.calls}
    assert set(by_id) == {"req_1", "req_1.1"}
    unserved = by_id["req_1.1"]
    assert (unserved.deployment, unserved.outcome, unserved.status) == ("filtered", "unserved", 200)
    assert unserved.error_code == "content_filter"
    assert (unserved.usage.prompt_tokens, unserved.usage.completion_tokens) == (11, 7)
    call = by_id["req_1"]
    assert call.outcome == "cancelled" and [a.outcome for a in call.attempts] == ["content_filter"]


def test_an_attempt_without_a_billed_answer_adds_nothing():
    sink = Sink()
    tracker = _tracker(sink)
    tracker.walked = [Attempt("filtered", "http_503", 5.0), Attempt("backup", "cancelled", 1.0)]
    settle(tracker)
    assert [c.request_id for c in sink.calls] == ["req_1"]


def test_a_call_refused_by_the_next_deployment_s_request_building_is_charged_for_the_refusal_it_got():
    # The refusing deployment answered (and billed); the next one's request could not be built for this
    # call (an adapter's 400, e.g. Gemini taking images only as data URLs). That error carries no
    # attempts of routing's: the walk's own list still says what was billed.
    from multihome.accounting.tracker import finish_failed
    from multihome.schema.errors import bad_request

    sink = Sink()
    tracker = _tracker(sink)
    tracker.walked = [Attempt("filtered", "content_filter", 5.0, billed=(DEP, peek_decoder.decode(REFUSED)))]
    err = bad_request("messages[0].content[0]: images must be data URLs when the request is served by X.")
    assert not err.attempts
    finish_failed(tracker, err)
    by_id = {c.request_id: c for c in sink.calls}
    assert set(by_id) == {"req_1", "req_1.1"}
    assert by_id["req_1.1"].outcome == "unserved" and by_id["req_1.1"].usage.completion_tokens == 7
    assert by_id["req_1"].status == 400 and [a.outcome for a in by_id["req_1"].attempts] == ["content_filter"]


def test_a_request_sent_and_cancelled_before_its_answer_is_charged_its_prompt_estimate():
    # The client hung up while the upstream worked (the SDKs do at their timeout, and send the call again): the
    # provider read the prompt and bills it; the call was charged nothing.
    from multihome.routing.attempts import UNANSWERED
    from multihome.schema.chat import parse_chat

    sink = Sink()
    tracker = _tracker(sink)
    tracker.request = parse_chat(
        b'{"model": "g", "messages": [{"role": "user", "content": "' + b"x" * 400 + b'"}]}'
    ).request
    tracker.walked = [Attempt("filtered", "cancelled", 900.0, billed=(DEP, UNANSWERED))]
    settle(tracker)
    by_id = {c.request_id: c for c in sink.calls}
    assert set(by_id) == {"req_1", "req_1.1"}
    unserved = by_id["req_1.1"]
    assert (unserved.deployment, unserved.outcome, unserved.status, unserved.error_code) == (
        "filtered",
        "unserved",
        499,
        "cancelled",
    )
    assert unserved.usage.prompt_tokens >= 100 and unserved.usage.completion_tokens == 0 and unserved.usage.estimated
    assert by_id["req_1"].outcome == "cancelled" and by_id["req_1"].usage is None
