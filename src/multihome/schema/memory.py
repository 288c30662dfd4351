"""The bodies of the `/v1/memory` routes (docs/memory.md), decoded once and checked: a bad field is
a 400 that names it, before anything is embedded, sealed or stored."""

from __future__ import annotations

from typing import Any

import msgspec

from .decoding import decode_body
from .errors import bad_request

MAX_ID = 200  # agent and user ids
MAX_TEXT = 32_768  # characters of one record
MAX_QUERY = 10_000  # characters of a search query (AgentCore's bound)
MAX_BATCH = 100  # records per create call
MAX_TOP_K = 100
MAX_METADATA = 16
MAX_TTL_S = 10 * 365 * 86_400
MODES = ("hybrid", "vector", "keyword")
Scalar = str | int | float | bool


class RecordIn(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    metadata: dict[str, Scalar] | None = None
    ttl_seconds: int | None = None


class CreateRecords(msgspec.Struct, forbid_unknown_fields=True):
    """One record (`text`, `metadata`, `ttl_seconds`) or several (`records`), in one namespace."""

    agent_id: str = ""
    user_id: str = ""
    text: str | None = None
    metadata: dict[str, Scalar] | None = None
    ttl_seconds: int | None = None
    records: list[RecordIn] | None = None


class Search(msgspec.Struct, forbid_unknown_fields=True):
    query: str
    agent_id: str = ""
    user_id: str = ""
    top_k: int = 10
    filters: dict[str, Any] | None = None
    mode: str = "hybrid"


class UpdateNamespace(msgspec.Struct, forbid_unknown_fields=True):
    agent_id: str = ""
    user_id: str = ""
    default_ttl_seconds: int | None = None


_create = msgspec.json.Decoder(CreateRecords)
_search = msgspec.json.Decoder(Search)
_namespace = msgspec.json.Decoder(UpdateNamespace)


_INT64 = (-(2**63), 2**63 - 1)


def check_id(value: str, param: str) -> str:
    """An agent or user id: up to 200 printable characters ("" for none)."""
    if len(value) > MAX_ID or not value.isprintable():
        raise bad_request(f"'{param}' must be at most {MAX_ID} printable characters.", param=param)
    return value


def _ttl(value: int | None, param: str) -> int | None:
    if value is not None and not 1 <= value <= MAX_TTL_S:
        raise bad_request(f"'{param}' must be between 1 and {MAX_TTL_S} seconds (or null).", param=param)
    return value


def check_record(rec: RecordIn, at: str) -> RecordIn:
    if not rec.text.strip() or len(rec.text) > MAX_TEXT:
        raise bad_request(f"'{at}text' must be 1 to {MAX_TEXT} characters, not blank.", param=f"{at}text")
    meta = rec.metadata or {}
    if len(meta) > MAX_METADATA:
        raise bad_request(f"'{at}metadata' holds at most {MAX_METADATA} pairs.", param=f"{at}metadata")
    for key, value in meta.items():
        if not 1 <= len(key) <= 64:
            raise bad_request(f"'{at}metadata' keys are 1 to 64 characters.", param=f"{at}metadata")
        if isinstance(value, str) and len(value) > 512:
            raise bad_request(f"'{at}metadata.{key}' is longer than 512 characters.", param=f"{at}metadata.{key}")
        # JSON allows any integer; the stored record (and most clients) hold 64 bits.
        if isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1]:
            raise bad_request(f"'{at}metadata.{key}' is outside the 64-bit integer range.", param=f"{at}metadata.{key}")
    _ttl(rec.ttl_seconds, f"{at}ttl_seconds")
    return rec


def parse_create_records(body: bytes) -> tuple[CreateRecords, list[RecordIn]]:
    req = decode_body(body, _create)
    check_id(req.agent_id, "agent_id")
    check_id(req.user_id, "user_id")
    if (req.text is None) == (req.records is None):
        raise bad_request("Give either 'text' (one record) or 'records' (a list of records).", param="text")
    if req.records is not None:
        if req.metadata is not None or req.ttl_seconds is not None:
            raise bad_request("With 'records', give 'metadata' and 'ttl_seconds' per record.", param="records")
        if not 1 <= len(req.records) <= MAX_BATCH:
            raise bad_request(f"'records' holds 1 to {MAX_BATCH} records.", param="records")
        return req, [check_record(r, f"records[{i}].") for i, r in enumerate(req.records)]
    assert req.text is not None
    return req, [check_record(RecordIn(req.text, req.metadata, req.ttl_seconds), "")]


def parse_search(body: bytes) -> Search:
    req = decode_body(body, _search)
    check_id(req.agent_id, "agent_id")
    check_id(req.user_id, "user_id")
    if not req.query.strip() or len(req.query) > MAX_QUERY:
        raise bad_request(f"'query' must be 1 to {MAX_QUERY} characters, not blank.", param="query")
    if not 1 <= req.top_k <= MAX_TOP_K:
        raise bad_request(f"'top_k' must be between 1 and {MAX_TOP_K}.", param="top_k")
    if req.mode not in MODES:
        raise bad_request(f"'mode' must be one of {', '.join(MODES)}.", param="mode")
    return req


def parse_update_namespace(body: bytes) -> UpdateNamespace:
    req = decode_body(body, _namespace)
    check_id(req.agent_id, "agent_id")
    check_id(req.user_id, "user_id")
    _ttl(req.default_ttl_seconds, "default_ttl_seconds")
    return req
