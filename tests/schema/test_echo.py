"""An error repeats at most ECHO_MAX characters of what the client sent (an id, a name), then "…"."""

import asyncio

import msgspec
import pytest

from multihome.api.admin.contracts import _at
from multihome.api.admin.dispatch import match_route
from multihome.api.admin.registry import ROUTES as ADMIN_ROUTES
from multihome.api.anthropic.translate import to_canonical as anthropic_canonical
from multihome.api.responses.agent import _agent_extension
from multihome.api.routes import ROUTES, RouteTable
from multihome.audit.reader import BadQuery, parse_cursor, parse_time
from multihome.schema.anthropic import parse_messages
from multihome.schema.chat import parse_chat
from multihome.schema.errors import ECHO_MAX, ApiError, echo, echo_path, echo_quoted
from multihome.schema.responses import parse_create, parse_update_conversation
from multihome.state.memory.filters import compile_filter
from multihome.storage.errors import NotFound
from multihome.tools.resolver import McpResolver
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


def test_a_decoders_message_shows_a_quoted_value_by_its_start():
    assert echo_quoted("Invalid enum value 'ok'") == "Invalid enum value 'ok'"
    assert echo_quoted(f"Invalid enum value '{LONG}'") == f"Invalid enum value '{SHOWN}'"
    assert echo_quoted(f"Object contains unknown field `{LONG}` - at `$.x`") == (
        f"Object contains unknown field `{SHOWN}` - at `$.x`"
    )


def _shown_in_part(err: ApiError) -> None:
    message = err.body.message + " " + (err.body.param or "")
    assert SHOWN in message and "TAIL" not in message, message


@pytest.mark.parametrize(
    "extra",
    [
        {"include": [LONG]},
        {"text": {"format": {"type": LONG}}},
        {"tools": [{"type": LONG}]},
        {
            "tools": [{"type": "function", "name": "f", "parameters": {}}],
            "tool_choice": {"type": "function", "name": LONG},
        },
        {"input": [{"type": LONG}]},
        {"input": [{"role": "user", "content": [{"type": LONG}]}]},
        {
            "input": [
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": [{"type": LONG}]},
            ]
        },
        {"multihome": {"agent": {LONG: 1}}},
    ],
)
def test_a_responses_refusal_shows_a_long_value_by_its_start(extra):
    """Were repeated whole: a 5,000-character `type`, include or tool name came back as a 5 KB message."""
    body = msgspec.json.encode({"model": "m", "input": "x", **extra})

    def refused() -> None:
        req = parse_create(body)
        _agent_extension(req)

    _shown_in_part(_refusal(refused))


def test_chat_and_anthropic_roles_and_the_routing_extension_show_a_long_value_by_its_start():
    chat = {"model": "m", "messages": [{"role": LONG, "content": "x"}]}
    _shown_in_part(_refusal(lambda: parse_chat(msgspec.json.encode(chat))))
    messages = {"model": "m", "max_tokens": 5, "messages": [{"role": LONG, "content": "x"}]}
    _shown_in_part(_refusal(lambda: anthropic_canonical(parse_messages(msgspec.json.encode(messages)))))
    update = msgspec.json.encode({"metadata": {}, LONG: 1})
    _shown_in_part(_refusal(lambda: parse_update_conversation(update)))
    mcp = {"type": "mcp", "server_label": "s", "require_approval": LONG}
    _shown_in_part(_refusal(lambda: asyncio.run(McpResolver(None).resolve("t", mcp))))  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", [{LONG: {"eq": [1]}}, {"k": {LONG: 1}}, {"AND": [{LONG: {"nope": 1}}]}])
def test_a_memory_filter_refusal_shows_a_long_key_or_operator_by_its_start(spec):
    with pytest.raises(ValueError) as caught:
        compile_filter(spec)
    message = str(caught.value)
    assert SHOWN in message and "TAIL" not in message, message


def test_an_unknown_path_is_shown_segment_by_segment_and_by_its_start():
    assert echo_path("/admin/v1/tenants/ten_1/keys/key_1") == "/admin/v1/tenants/ten_1/keys/key_1"
    shown = echo_path(f"/v1/responses/{LONG}/input_items")
    assert shown == f"/v1/responses/{SHOWN}/input_items"
    assert echo_path("/a" * 10_000).count("/") == 12 and echo_path("/a" * 10_000).endswith("/…")


def test_unknown_paths_cursors_and_times_of_the_admin_api_are_shown_by_their_start():
    """Were repeated whole: `Unknown admin endpoint GET /admin/v1/tenants/ZqZq…` (and the client API's
    `Unknown endpoint`), an audit query's `until`/`cursor`, a contracts report's `at`."""
    table = RouteTable(ROUTES, {r.handler: None for r in ROUTES})  # type: ignore[misc]
    refusals = [
        _refusal(lambda: table.match("GET", f"/v1/nothing/{LONG}".encode())),
        _refusal(lambda: table.match("PUT", f"/v1/responses/{LONG}".encode())),  # a 405 names the path too
        _refusal(lambda: match_route(ADMIN_ROUTES, "GET", f"/admin/v1/tenants/{LONG}/nothing")),
        _refusal(lambda: _at({"at": LONG})),
    ]
    for err in refusals:
        assert SHOWN in err.body.message and "TAIL" not in err.body.message, err.body.message
    for bad in (lambda: parse_time(LONG, "until"), lambda: parse_cursor(LONG + ":x")):
        with pytest.raises(BadQuery) as caught:
            bad()
        assert SHOWN in str(caught.value) and "TAIL" not in str(caught.value), str(caught.value)


def test_a_format_or_tool_choice_type_is_echoed_by_its_start():
    """Found by bench/fuzz_values.py: chat's response_format.type and a Responses tool_choice type were repeated
    whole (a 5,000-character type came back in the 400)."""
    chat = {"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": LONG}}
    responses = {
        "model": "m",
        "input": "x",
        "tools": [{"type": "function", "name": "f"}],
        "tool_choice": {"type": LONG},
    }
    for err in (
        _refusal(lambda: parse_chat(msgspec.json.encode(chat))),
        _refusal(lambda: parse_create(msgspec.json.encode(responses))),
    ):
        _shown_in_part(err)


def test_the_admin_apis_stored_field_checks_echo_a_value_by_its_start():
    """Found by bench/fuzz_values.py: a budget's amount came back whole in the admin API's 400 (`not 'QQQ…'`,
    5,000 characters), as did its currency, period or mode, a revocation's kind and a policy's scope."""
    from multihome.storage.budgets import budget_amount, budget_currency
    from multihome.storage.errors import Invalid
    from multihome.storage.revocations import _kind

    for check in (budget_amount, budget_currency, _kind, lambda v: budget_amount("-" + v.replace("n", "0"))):
        with pytest.raises(Invalid) as info:
            check(LONG)
        message = str(info.value)
        assert "TAIL" not in message and "n" * (ECHO_MAX + 1) not in message and "0" * (ECHO_MAX + 1) not in message
