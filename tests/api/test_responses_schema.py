"""The Response object keeps to OpenAI's published schema (openai/openai-openapi, checked by hand
against it): `usage` is an object and `user` a string, neither nullable, so both are absent until
there is one; a json_schema format's `description` likewise (the SDKs read an absent field as None)."""

from __future__ import annotations

from multihome.api.responses.translate import Shell
from multihome.schema.responses import parse_create

USAGE = {"input_tokens": 3, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 2}


def test_usage_and_user_are_absent_until_there_is_one():
    shell = Shell(parse_create(b'{"model": "m", "input": "hi"}'), store=True)
    started = shell.render("in_progress", [])
    assert "usage" not in started and "user" not in started
    done = Shell(parse_create(b'{"model": "m", "input": "hi", "user": "u-1"}'), store=True).render(
        "completed", [], USAGE
    )
    assert done["usage"] == USAGE and done["user"] == "u-1"


def test_a_json_schema_format_echo_has_no_null_description():
    fmt = b'{"type": "json_schema", "name": "x", "schema": {"type": "object"}}'
    echoed = Shell(parse_create(b'{"model": "m", "input": "hi", "text": {"format": ' + fmt + b"}}"), store=True)
    got = echoed.render("completed", [])["text"]["format"]
    assert "description" not in got and got["name"] == "x" and got["strict"] is None
