"""Concurrent requests on one conversation, end to end with the official openai SDK on SQLite and PostgreSQL:
what a turn was checked against when it began (its tool result answers a call not yet answered; its input fits
the conversation's bound) is checked again when its answer is stored, in the same transaction, so requests
that each pass alone cannot together store a second result for one call or take the conversation past its
bound by more than one turn's answer (docs/responses.md "How state is kept").

The upstream holds each answer (a latency fault) so the requests overlap: each is sent, then the test waits
until the simulator has received the turns before it lets the next request go. Only the outcome is asserted,
never an order: whichever request commits first is stored, and the others get the 400 they would have got had
they come after it."""

from __future__ import annotations

import concurrent.futures
import time

import openai
import pytest

from multihome.crypto import init_key_file

from .processes import Gateway, Simulator
from .stores import head_database
from .test_responses import SECRETS, WEATHER, World, gateway_config

MAX_ITEMS = 8
HOLD_MS = 3000  # the upstream's answer is held this long: the other request goes meanwhile
DEADLINE = 60  # seconds: a condition polled for; reached only if it never holds


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"races-{request.param}")
    db = head_database(request, request.param, tmp)
    init_key_file(tmp / "kms.key")
    sims = {
        "oa": Simulator("openai", "races-openai"),
        "first": Simulator("openai", "races-first"),
        "an": Simulator("anthropic", "races-anthropic", "--api-key-env", "MH_R_ANTHROPIC_KEY", env=SECRETS),
    }
    cfg = gateway_config(tmp, db, sims)
    cfg["responses"] = {"conversations": {"max_items": MAX_ITEMS}}
    gateway = None
    try:
        gateway = Gateway(cfg, tmp, SECRETS)
        yield World(tmp, db, gateway, sims)
    finally:
        log = gateway.stop() if gateway is not None else ""
        for sim in sims.values():
            sim.stop()
        assert "Traceback" not in log, log[-3000:]


def _until_received(world: World, count: int) -> None:
    """Wait until the upstream has received `count` requests (each then held HOLD_MS)."""
    deadline = time.monotonic() + DEADLINE
    while len(world.sims["oa"].requests()) < count:
        assert time.monotonic() < deadline, "the upstream never received the turns"
        time.sleep(0.02)


def _outcome(call) -> object:
    try:
        return call()
    except openai.APIStatusError as err:
        return err


def _results(client: openai.OpenAI, conv: str, call_id: str) -> list:
    items = client.conversations.items.list(conv, limit=100).data
    return [i for i in items if i.type == "function_call_output" and i.call_id == call_id]


def _asked(client: openai.OpenAI, call_id: str) -> tuple:
    """A conversation ending in a call of get_weather, and the result that answers it."""
    call = {"type": "function_call", "call_id": call_id, "name": "get_weather", "arguments": "{}"}
    conv = client.conversations.create(items=[{"type": "message", "role": "user", "content": "weather?"}, call])
    return conv, {"type": "function_call_output", "call_id": call_id, "output": "sunny"}


def _refused(outcome: object, code: str) -> bool:
    return isinstance(outcome, openai.BadRequestError) and outcome.code == code


@pytest.fixture
def held(world):
    world.sims["oa"].reset()
    yield world
    world.sims["oa"].clear_faults()


@pytest.mark.parametrize("stream", [False, True])
def test_a_turn_and_an_add_answering_one_call_concurrently_store_one_result(held, stream):
    world, client = held, held.sdk()
    conv, result = _asked(client, "call_race")
    world.sims["oa"].fault(latency_ms=HOLD_MS, times=1)

    def turn() -> object:
        if not stream:
            return client.responses.create(model="gpt", conversation=conv.id, input=[result], tools=[WEATHER])
        events = list(
            client.responses.create(model="gpt", conversation=conv.id, input=[result], tools=[WEATHER], stream=True)
        )
        return events[-1]

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(_outcome, turn)
        _until_received(world, 1)  # the turn passed its check and waits for its answer
        added = _outcome(lambda: client.conversations.items.create(conv.id, items=[result]))
        answered = pending.result(timeout=DEADLINE)
    assert len(_results(client, conv.id, "call_race")) == 1
    if not _refused(added, "duplicate_call_id"):  # the add came first (as intended): the turn is refused
        assert not isinstance(added, Exception), added
        if stream:  # the stream ends failed, naming the duplicate; nothing of the turn is in the conversation
            assert answered.type == "response.failed", answered
        else:
            assert _refused(answered, "duplicate_call_id"), answered
            assert "call_race" in answered.message
    else:  # the turn's answer was stored before the add (a slow machine): the add is refused instead
        assert not isinstance(answered, Exception), answered


def test_two_turns_answering_one_call_concurrently_store_one_result(held):
    world, client = held, held.sdk()
    conv, result = _asked(client, "call_twice")
    world.sims["oa"].fault(latency_ms=HOLD_MS, times=2)

    def turn(n: int):
        ask = {"type": "message", "role": "user", "content": f"and in city {n}?"}  # two requests, two answers
        return lambda: client.responses.create(model="gpt", conversation=conv.id, input=[result, ask], tools=[WEATHER])

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        pending = [pool.submit(_outcome, turn(n)) for n in range(2)]
        outcomes = [p.result(timeout=DEADLINE) for p in pending]
    stored = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(stored) == 1 and all(_refused(o, "duplicate_call_id") for o in outcomes if o not in stored), outcomes
    assert len(_results(client, conv.id, "call_twice")) == 1


def test_concurrent_turns_that_each_fit_alone_do_not_take_the_conversation_past_its_bound(held):
    """MAX_ITEMS - 3 items, four turns of one input item each, held upstream together: each fits alone. In
    commit order the first two are kept (the second's input fills the bound, its answer goes past it), the
    others are refused (400 conversation_too_large), so the conversation holds the bound plus one answer."""
    world, client = held, held.sdk()
    conv = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": str(i)} for i in range(MAX_ITEMS - 3)]
    )
    world.sims["oa"].fault(latency_ms=HOLD_MS, times=4)

    def turn(n: int):
        return lambda: client.responses.create(model="gpt", conversation=conv.id, input=f"question {n}")

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        pending = [pool.submit(_outcome, turn(n)) for n in range(4)]
        outcomes = [p.result(timeout=DEADLINE) for p in pending]
    stored = [o for o in outcomes if not isinstance(o, Exception)]
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert all(_refused(o, "conversation_too_large") for o in refused), outcomes
    assert all(len(o.output) == 1 for o in stored)  # the simulator answers with one message
    items = client.conversations.items.list(conv.id, limit=100).data
    assert len(items) == MAX_ITEMS + 1 and len(stored) == 2, (len(items), outcomes)


def test_a_result_whose_call_is_deleted_while_its_turn_answers_is_refused(held):
    """The turn's result answered a call in the conversation when it began; the call was deleted while the
    model answered: appended, the result would answer nothing (every later turn refused by the provider)."""
    world, client = held, held.sdk()
    conv, result = _asked(client, "call_gone")
    call_item = next(i for i in client.conversations.items.list(conv.id).data if i.type == "function_call")
    world.sims["oa"].fault(latency_ms=HOLD_MS, times=1)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            _outcome,
            lambda: client.responses.create(model="gpt", conversation=conv.id, input=[result], tools=[WEATHER]),
        )
        _until_received(world, 1)  # the turn passed its check and waits for its answer
        client.conversations.items.delete(call_item.id, conversation_id=conv.id)
        answered = pending.result(timeout=DEADLINE)
    assert isinstance(answered, openai.BadRequestError) and "call_gone" in answered.message, answered
    assert _results(client, conv.id, "call_gone") == []


def _final(client: openai.OpenAI, response_id: str):
    deadline = time.monotonic() + DEADLINE
    while (found := client.responses.retrieve(response_id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline, f"{response_id} never ended"
        time.sleep(0.05)
    return found


def test_concurrent_background_turns_do_not_take_the_conversation_past_its_bound(held):
    """As the foreground test above, with `background: true`: each turn fits when created, and each run's
    append is checked again, so two are kept and the others end failed (conversation_too_large), nothing of
    them appended, the answers they were billed for shown in them."""
    world, client = held, held.sdk()
    conv = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": str(i)} for i in range(MAX_ITEMS - 3)]
    )
    world.sims["oa"].fault(latency_ms=HOLD_MS, times=4)
    created = [
        client.responses.create(model="gpt", conversation=conv.id, input=f"question {n}", background=True)
        for n in range(4)
    ]
    finals = [_final(client, c.id) for c in created]
    failed = [f for f in finals if f.status == "failed"]
    # The Response's error code is from OpenAI's enum (server_error); the message names the bound's setting.
    assert all("responses.conversations.max_items" in f.error.message for f in failed), [f.error for f in finals]
    assert all(len(f.output) == 1 for f in failed), failed  # the simulator answers with one message
    items = client.conversations.items.list(conv.id, limit=100).data
    assert len(items) == MAX_ITEMS + 1 and len(finals) - len(failed) == 2, (len(items), finals)


@pytest.mark.parametrize("stream", [False, True])
def test_two_background_turns_answering_one_call_store_one_result(held, stream):
    world, client = held, held.sdk()
    conv, result = _asked(client, "call_bg")
    world.sims["oa"].fault(latency_ms=HOLD_MS, times=2)
    created = []
    for n in range(2):
        ask = {"type": "message", "role": "user", "content": f"and in city {n}?"}
        turn = client.responses.create(
            model="gpt", conversation=conv.id, input=[result, ask], tools=[WEATHER], background=True, stream=stream
        )
        created.append(next(iter(turn)).response if stream else turn)
    finals = [_final(client, c.id) for c in created]
    assert sorted(f.status for f in finals) == ["completed", "failed"], finals
    refused = next(f for f in finals if f.status == "failed")
    assert "call_bg" in refused.error.message, refused.error
    assert len(_results(client, conv.id, "call_bg")) == 1
    if stream:  # the refused run's stream, replayed, ends with the error and response.failed
        events = list(client.responses.retrieve(refused.id, stream=True))
        assert [e.type for e in events[-2:]] == ["error", "response.failed"], events[-3:]
