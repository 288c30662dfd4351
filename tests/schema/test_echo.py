"""An error repeats at most ECHO_MAX characters of what the client sent (an id, a name), then "…"."""

import msgspec

from multihome.schema.errors import ECHO_MAX, ApiError, echo
from multihome.schema.responses import parse_create
from multihome.storage.errors import NotFound
from multihome.tools.spec import check_headers, check_name


def test_short_values_are_echoed_whole_and_long_ones_cut():
    assert echo("resp_abc") == "resp_abc"
    assert echo("x" * ECHO_MAX) == "x" * ECHO_MAX
    assert echo("x" * 100_000) == "x" * ECHO_MAX + "…"
    assert echo(None) == "None"


def test_the_admin_apis_not_found_names_a_long_id_by_its_start():
    message = str(NotFound("api key", "k" * 10_000, "t" * 10_000))
    assert message == f"api key {'k' * ECHO_MAX}… not found in tenant {'t' * ECHO_MAX}…"


LONG = "n" * 500 + "TAIL"
SHOWN = "n" * ECHO_MAX + "…"


def _refusal(call) -> ApiError:
    try:
        call()
    except ApiError as err:
        return err
    raise AssertionError("not refused")


def test_the_tool_checks_echo_a_long_client_name_as_every_error_does():
    """Names a client gives a tool (an MCP function's name, a header, a memory tool's field, a server_label,
    a nested field): echo's start and "…", not a cut of their own (60, 100 characters, no mark)."""
    tool = {"type": "mcp", "server_label": LONG, "server_url": "https://mcp.example.com/mcp"}
    bodies = {
        "memory field": {"model": "m", "input": "x", "tools": [{"type": "memory", LONG: 1}]},
        "server_label": {"model": "m", "input": "x", "tools": [tool, tool]},
        "nested field": {"model": "m", "input": "x", "reasoning": {LONG: 1}},
    }
    errors = {name: _refusal(lambda b=body: parse_create(msgspec.json.encode(b))) for name, body in bodies.items()}
    errors["mcp name"] = _refusal(lambda: check_name(LONG))
    errors["header"] = _refusal(lambda: check_headers({LONG + " ": "v"}))
    for name, err in errors.items():
        message = err.body.message + " " + (err.body.param or "")
        assert SHOWN in message and "TAIL" not in message and "n" * (ECHO_MAX + 1) not in message, (name, message)
