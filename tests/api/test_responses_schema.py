"""The Response object keeps to OpenAI's published schema (openai/openai-openapi, checked by hand
against it): `usage` is an object and `user` a string, neither nullable, so both are absent until
there is one; a json_schema format's `description` likewise (the SDKs read an absent field as None)."""

from __future__ import annotations

import pytest

from multihome.api.responses.translate import Shell
from multihome.schema.responses import parse_create
from openai_schemas import problems

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


FULL_USAGE = {
    "input_tokens": 3,
    "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
    "output_tokens": 2,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 5,
}


@pytest.mark.parametrize("limit", ["max_steps", "max_tool_calls", "max_run_time", "max_spend", "made_up_upstream"])
def test_an_incomplete_response_names_a_reason_of_openais_and_keeps_which_limit(limit):
    """An agent run stopped by one of the gateway's limits was `incomplete_details.reason: "max_steps"`,
    outside OpenAI's enum (the published schema and the SDKs' Literal refused the whole Response)."""
    shell = Shell(parse_create(b'{"model": "m", "input": "hi"}'), store=True)
    done = shell.render("incomplete", [], FULL_USAGE, incomplete=limit)
    assert not problems("Response", done), problems("Response", done)
    assert done["incomplete_details"] == {"reason": "max_output_tokens", "multihome": {"limit": limit}}
    event = {"type": "response.incomplete", "sequence_number": 3, "response": done}
    assert not problems("ResponseStreamEvent", event)


@pytest.mark.parametrize("reason", ["max_output_tokens", "content_filter"])
def test_openais_own_incomplete_reasons_are_kept_as_they_are(reason):
    shell = Shell(parse_create(b'{"model": "m", "input": "hi"}'), store=True)
    done = shell.render("incomplete", [], FULL_USAGE, incomplete=reason)
    assert done["incomplete_details"] == {"reason": reason} and not problems("Response", done)
