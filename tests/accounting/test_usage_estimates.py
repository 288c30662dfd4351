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
