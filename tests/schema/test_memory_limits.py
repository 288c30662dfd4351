"""docs/memory.md's limits on the /v1/memory bodies, at the bound and one past it: the last value that
passes, and a 400 naming the field for the first that does not (the e2e tests send a few bad bodies;
these pin the numbers the page promises)."""

from __future__ import annotations

import json

import pytest

from multihome.schema.errors import ApiError
from multihome.schema.memory import parse_create_records, parse_search, parse_update_namespace

TEN_YEARS_S = 10 * 365 * 86_400


def _create(**body):
    return parse_create_records(json.dumps(body).encode())


def _refused(parse, body: dict, param: str) -> None:
    with pytest.raises(ApiError) as info:
        parse(json.dumps(body).encode())
    assert (info.value.status, info.value.body.param) == (400, param), info.value.body.message


def test_a_record_at_each_bound_is_taken():
    meta = {f"k{i}".ljust(64, "x"): "v" * 512 for i in range(16)}  # 16 pairs, 64-character keys, 512-character values
    req, records = _create(
        agent_id="a" * 200, user_id="u" * 200, text="t" * 32_768, metadata=meta, ttl_seconds=TEN_YEARS_S
    )
    assert len(records) == 1 and records[0].metadata == meta
    _, many = _create(records=[{"text": "x", "ttl_seconds": 1}] * 100)
    assert len(many) == 100


@pytest.mark.parametrize(
    "body, param",
    [
        ({"text": "t" * 32_769}, "text"),
        ({"text": "   "}, "text"),  # not blank
        ({"text": "x", "metadata": {f"k{i}": i for i in range(17)}}, "metadata"),
        ({"text": "x", "metadata": {"k" * 65: 1}}, "metadata"),
        ({"text": "x", "metadata": {"": 1}}, "metadata"),
        ({"text": "x", "metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"text": "x", "ttl_seconds": TEN_YEARS_S + 1}, "ttl_seconds"),
        ({"text": "x", "ttl_seconds": 0}, "ttl_seconds"),
        ({"records": [{"text": "x"}] * 101}, "records"),
        ({"records": []}, "records"),
        ({"records": [{"text": "x"}, {"text": "y" * 32_769}]}, "records[1].text"),
        ({"agent_id": "a" * 201, "text": "x"}, "agent_id"),
        ({"user_id": "u\n", "text": "x"}, "user_id"),  # printable characters only
    ],
)
def test_a_record_past_a_bound_is_a_400_naming_the_field(body, param):
    _refused(parse_create_records, body, param)


def test_search_bounds_and_defaults():
    req = parse_search(json.dumps({"query": "q"}).encode())
    assert (req.top_k, req.mode, req.agent_id, req.user_id) == (10, "hybrid", "", "")
    assert parse_search(json.dumps({"query": "q" * 10_000, "top_k": 100}).encode()).top_k == 100
    for body, param in (
        ({"query": "q" * 10_001}, "query"),
        ({"query": " "}, "query"),
        ({"query": "q", "top_k": 101}, "top_k"),
        ({"query": "q", "top_k": 0}, "top_k"),
        ({"query": "q", "mode": "semantic"}, "mode"),
    ):
        _refused(parse_search, body, param)


def test_a_namespace_ttl_is_one_second_to_ten_years_or_null():
    assert parse_update_namespace(b'{"default_ttl_seconds": null}').default_ttl_seconds is None
    assert parse_update_namespace(json.dumps({"default_ttl_seconds": TEN_YEARS_S}).encode())
    _refused(parse_update_namespace, {"default_ttl_seconds": TEN_YEARS_S + 1}, "default_ttl_seconds")
