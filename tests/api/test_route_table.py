"""The route table: a `{name}` matches one segment where templates share a prefix (the Responses and
Conversations routes), a lone trailing `{name}` still matches the rest (model names with slashes, the
admin API), and a known path with another method is a 405 naming the methods it takes."""

from __future__ import annotations

import pytest

from multihome.api.routes import ROUTES, RouteTable
from multihome.schema.errors import ApiError


async def _handler(call, receive, send) -> None:  # never called: the table only binds names
    return None


TABLE = RouteTable(ROUTES, {r.handler: _handler for r in ROUTES})


@pytest.mark.parametrize(
    "method,path,handler",
    [
        ("POST", "/v1/responses", "responses_create"),
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
    ],
)
def test_what_matches_nothing_is_a_404_or_a_405(method, path, status):
    with pytest.raises(ApiError) as err:
        TABLE.match(method, path.encode())
    assert err.value.status == status
    if status == 405:
        assert err.value.headers["allow"]
