"""A conversation's bound end to end (`responses.conversations`, docs/responses.md "How state is kept"), with
the official openai SDK on SQLite and PostgreSQL, the bound set small: an add or a turn that would pass it is
OpenAI's error envelope (400 `conversation_too_large`, naming the limit), decided before any upstream call; a
delete makes room; a turn's answer is kept whatever its size."""

from __future__ import annotations

import openai
import pytest

from multihome.crypto import init_key_file
from openai_schemas import problems

from .processes import Gateway, Simulator
from .stores import head_database
from .test_responses import SECRETS, World, gateway_config

MAX_ITEMS = 6
MAX_BYTES = 20_000


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"bound-{request.param}")
    db = head_database(request, request.param, tmp)
    init_key_file(tmp / "kms.key")
    sims = {
        "oa": Simulator("openai", "bound-openai"),
        "first": Simulator("openai", "bound-first"),
        "an": Simulator("anthropic", "bound-anthropic", "--api-key-env", "MH_R_ANTHROPIC_KEY", env=SECRETS),
    }
    cfg = gateway_config(tmp, db, sims)
    cfg["responses"] = {"conversations": {"max_items": MAX_ITEMS, "max_bytes": MAX_BYTES}}
    gateway = None
    try:
        gateway = Gateway(cfg, tmp, SECRETS)
        yield World(tmp, db, gateway, sims)
    finally:
        log = gateway.stop() if gateway is not None else ""
        for sim in sims.values():
            sim.stop()
        assert "Traceback" not in log, log[-3000:]


def _upstream_calls(world: World) -> int:
    return len(world.sims["oa"].requests()) + len(world.sims["an"].requests())


def _msg(text: str) -> dict:
    return {"type": "message", "role": "user", "content": text}


def _too_large(err: pytest.ExceptionInfo, param: str, limit: str) -> str:
    body = err.value.response.json()
    assert not problems("ErrorResponse", body), body  # OpenAI's published envelope, all four keys
    error = body["error"]
    assert err.value.status_code == 400 and error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, "conversation_too_large"), error
    assert f"responses.conversations.{limit}" in error["message"], error
    return error["message"]


def test_an_add_past_the_item_bound_is_a_400_naming_it_and_a_delete_makes_room(world):
    client = world.sdk()
    conv = client.conversations.create(items=[_msg(str(i)) for i in range(4)])
    with pytest.raises(openai.BadRequestError) as err:
        client.conversations.items.create(conv.id, items=[_msg("4"), _msg("5"), _msg("6")])
    message = _too_large(err, "items", "max_items")
    assert "would hold 7 items" in message and f"at most {MAX_ITEMS} items" in message and conv.id in message
    assert len(client.conversations.items.list(conv.id).data) == 4  # none of the three added
    client.conversations.items.create(conv.id, items=[_msg("4"), _msg("5")])
    with pytest.raises(openai.BadRequestError) as err:
        client.conversations.items.create(conv.id, items=[_msg("6")])
    _too_large(err, "items", "max_items")
    oldest = client.conversations.items.list(conv.id, order="asc", limit=1).data[0]
    client.conversations.items.delete(oldest.id, conversation_id=conv.id)
    client.conversations.items.create(conv.id, items=[_msg("6")])
    with pytest.raises(openai.BadRequestError) as err:  # a new conversation past it: not created
        client.conversations.create(items=[_msg(str(i)) for i in range(MAX_ITEMS + 1)])
    assert "The conversation would hold" in _too_large(err, "items", "max_items")


def test_an_add_past_the_byte_bound_is_a_400_naming_it(world):
    client = world.sdk()
    conv = client.conversations.create(items=[_msg("a" * 15_000)])
    with pytest.raises(openai.BadRequestError) as err:
        client.conversations.items.create(conv.id, items=[_msg("b" * 6_000)])
    assert f"at most {MAX_BYTES:,} bytes of items" in _too_large(err, "items", "max_bytes")
    client.conversations.items.create(conv.id, items=[_msg("b" * 3_000)])


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_a_turn_past_the_bound_is_refused_before_any_upstream_call_and_an_answer_is_always_kept(world, model):
    client = world.sdk()
    conv = client.conversations.create(items=[_msg(str(i)) for i in range(MAX_ITEMS - 1)])
    before = _upstream_calls(world)
    with pytest.raises(openai.BadRequestError) as err:  # its input alone passes it
        client.responses.create(model=model, input=[_msg("x"), _msg("y"), _msg("z")], conversation=conv.id)
    _too_large(err, "conversation", "max_items")
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=model, input="b" * 20_000, conversation=conv.id)
    _too_large(err, "conversation", "max_bytes")
    assert _upstream_calls(world) == before
    # One item of room: the turn is served, and its answer appended past the bound (never lost), the
    # response stored or not.
    answer = client.responses.create(model=model, input="last question", conversation=conv.id, store=model == "gpt")
    items = client.conversations.items.list(conv.id, order="asc", limit=100).data
    assert len(items) == MAX_ITEMS + len(answer.output) and items[-1].id == answer.output[-1].id
    with pytest.raises(openai.BadRequestError) as err:  # then full: every turn is refused until items are deleted
        client.responses.create(model=model, input="more", conversation=conv.id)
    _too_large(err, "conversation", "max_items")
