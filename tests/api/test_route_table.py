"""The route table: a `{name}` matches one segment where templates share a prefix (the Responses and
Conversations routes), a lone trailing `{name}` still matches the rest (model names with slashes, the
admin API), and a known path with another method is a 405 naming the methods it takes."""

from __future__ import annotations

import re

import pytest

from multihome.api.routes import ROUTES, UNSERVED, RouteTable
from multihome.schema.errors import ApiError
from openai_schemas import operations


async def _handler(call, receive, send) -> None:  # never called: the table only binds names
    return None


TABLE = RouteTable(ROUTES, {r.handler: _handler for r in ROUTES})


@pytest.mark.parametrize(
    "method,path,handler",
    [
        ("POST", "/v1/responses", "responses_create"),
        ("POST", "/v1/responses/input_tokens", "responses_input_tokens"),  # not a response's id
        ("GET", "/v1/responses/resp_1", "responses_retrieve"),
        ("DELETE", "/v1/responses/resp_1", "responses_delete"),
        ("GET", "/v1/responses/resp_1/input_items", "responses_input_items"),
        ("POST", "/v1/responses/resp_1/cancel", "responses_cancel"),
        ("POST", "/v1/conversations/conv_1", "conversations_update"),
        ("POST", "/v1/conversations/conv_1/items", "conversation_items_create"),
        ("DELETE", "/v1/conversations/conv_1/items/msg_1", "conversation_item_delete"),
        ("GET", "/v1/models/meta/llama-3", "model"),  # the rest of the path is the name
        ("GET", "/admin/v1/tenants/ten_1/keys", "admin"),
        ("POST", "/v1/chat/completions", "chat"),
    ],
)
def test_each_path_reaches_its_handler(method, path, handler):
    route, _ = TABLE.match(method, path.encode())
    assert route.handler == handler


@pytest.mark.parametrize(
    "method,path,status",
    [
        ("PUT", "/v1/responses/resp_1", 405),
        ("GET", "/v1/responses/resp_1/cancel", 405),
        ("GET", "/v1/responses/resp_1/unknown", 404),
        ("GET", "/v1/responses/a/b/input_items", 404),  # one segment per id
        ("GET", "/v1/conversations/conv_1/items/msg_1/extra", 404),
        ("GET", "/v1/responses/input_tokens", 405),  # a served path's word, not a response id
    ],
)
def test_what_matches_nothing_is_a_404_or_a_405(method, path, status):
    with pytest.raises(ApiError) as err:
        TABLE.match(method, path.encode())
    assert err.value.status == status
    if status == 405:
        assert err.value.headers["allow"]


@pytest.mark.parametrize("operation", operations())
def test_a_published_operation_is_never_taken_for_another(operation):
    """Each of OpenAI's published operations, its `{name}`s filled, reaches the route of the same template, or a
    405 on a path this gateway serves with other methods, or a 404: never another route's id (was: POST
    /v1/responses/input_tokens and /compact were a 405 'use DELETE, GET' of `/v1/responses/{response_id}`)."""
    method, template = operation.split(" ")
    path = re.sub(r"\{\w+\}", "probe_1", template)
    try:
        route, _ = TABLE.match(method, path.encode())
    except ApiError as err:
        assert err.status == 404 or any(r.path == template for r in ROUTES), (err.status, err.body.message)
        return
    assert route.path == template


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/v1/responses/compact"),
        ("GET", "/v1/chat/completions/chatcmpl_1"),
        ("POST", "/v1/chat/completions/chatcmpl_1"),
        ("DELETE", "/v1/chat/completions/chatcmpl_1"),
        ("GET", "/v1/chat/completions/chatcmpl_1/messages"),
    ],
)
def test_a_published_path_not_served_is_a_404_saying_why(method, path):
    with pytest.raises(ApiError) as err:
        TABLE.match(method, path.encode())
    assert (err.value.status, err.value.body.code) == (404, "unknown_url")
    assert "is not served by this gateway" in err.value.body.message
    assert any(u.why in err.value.body.message for u in UNSERVED)


def test_listing_stored_chat_completions_is_a_405_saying_none_are_kept():
    """GET /v1/chat/completions (the SDK's `chat.completions.list()`): the path is served with POST, so a 405
    naming it, and why there is no list (was: only 'use POST')."""
    with pytest.raises(ApiError) as err:
        TABLE.match("GET", b"/v1/chat/completions")
    assert (err.value.status, err.value.body.code, err.value.headers) == (405, "method_not_allowed", {"allow": "POST"})
    assert "keeps no chat completions" in err.value.body.message


@pytest.mark.parametrize("path", ["/v1/chat/completions/", "/v1/chat/completions//"])
def test_the_chat_path_with_a_trailing_slash_is_not_taken_for_a_stored_completion(path):
    """A client's `POST /v1/chat/completions/` is the chat route mistyped: the 404 lists what is served, it does
    not say chat completions are not kept."""
    with pytest.raises(ApiError) as err:
        TABLE.match("POST", path.encode())
    assert err.value.status == 404 and "POST /v1/chat/completions," in err.value.body.message
    assert "keeps no chat completions" not in err.value.body.message
