"""Whatever a client or tenant puts into a reflected header value, the server can write it and a
client can read it back (issue 11, finding 1). Checked against uvicorn's own header checks."""

from __future__ import annotations

from urllib.parse import unquote

from hypothesis import given
from hypothesis import strategies as st
from uvicorn.protocols.http.httptools_impl import HEADER_VALUE_RE

from multihome.routing.attempts import Attempt, attempts_header
from multihome.schema import header_text


def _writable(value: str) -> bool:
    return HEADER_VALUE_RE.search(value.encode()) is None


@given(st.lists(st.text(), max_size=30))
def test_any_names_are_writable_bounded_and_read_back(items):
    value = header_text.names(items)
    assert _writable(value) and " " not in value.replace(" more", "")
    assert len(value) <= header_text.MAX_CHARS
    shown = value.split(",") if value else []
    if shown and shown[-1].startswith("+"):
        shown = shown[:-1]
    assert [unquote(n) for n in shown] == [n for n in items[: len(shown)]]


def test_plain_names_are_kept_and_hostile_ones_encoded():
    assert header_text.names(["messages[].name", "top_k"]) == "messages[].name,top_k"
    assert header_text.names(["x\r\nX-Injected: 1", "a,b", "50%"]) == "x%0D%0AX-Injected:%201,a%2Cb,50%25"
    assert header_text.names(["\ud800"]) == "?" and header_text.text("a\ud800") == "a "  # lone surrogates
    many = header_text.names([f"field_{i}" for i in range(1000)])
    assert many.endswith(" more") and len(many) <= header_text.MAX_CHARS


@given(st.text(), st.text())
def test_any_deployment_or_reason_makes_a_writable_attempts_header(name, reason):
    value = attempts_header([Attempt(name, "skipped", 0.0, reason), Attempt("d", "ok", 1.5)])
    assert _writable(value)
    assert len(value) <= 4096


def test_a_policy_description_with_crlf_stays_on_one_line():
    reason = 'denied by tenant policy "eu only" — keep data in the EU\r\nX-Injected: 1'
    value = attempts_header([Attempt("us-east", "skipped", 0.0, reason), Attempt("eu", "ok", 12.0)])
    assert value == (
        "us-east;outcome=skipped;reason=\"denied by tenant policy 'eu only' — keep data in the EU  "
        'X-Injected: 1", eu;outcome=ok;ms=12.0'
    )
    assert _writable(value)


def test_free_text_is_cut_to_its_limit():
    assert header_text.text("a" * 5000, 100) == "a" * 97 + "..."
    assert header_text.text("plain text — as is") == "plain text — as is"


def test_an_upstream_retry_after_of_any_size_gives_the_client_a_whole_number_of_seconds():
    from types import SimpleNamespace

    from multihome.providers.base import CAPACITY
    from multihome.providers.errors import retry_after_seconds
    from multihome.routing.attempts import _failed, _Result

    group = SimpleNamespace(name="g")
    for sent, shown in [("1e400", "86400"), ("0.2", "1"), ("7.4", "7"), ("nan", "1")]:
        last = _Result(CAPACITY, "http_429", retry_after_seconds({"retry-after": sent}))
        err = _failed(group, None, [Attempt("d", "http_429", 1.0)], last)
        assert (err.status, err.headers["retry-after"]) == (429, shown)
