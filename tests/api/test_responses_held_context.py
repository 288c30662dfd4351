"""A stored chain's context kept as chat messages (api/responses/held_context.py) gives every turn the request
`to_canonical` builds from the whole context: the same raw fields byte for byte, the same typed request and
needs; a turn converts only its own items; a chain that changed since (a turn deleted) is converted again;
what cannot be held (reasoning, MCP items, a bad item) is left to the whole conversion."""

from __future__ import annotations

import asyncio
import gc
import random
import tracemalloc
from typing import Any

import msgspec
import pytest

from multihome.api.responses import held_context
from multihome.api.responses.held_context import HeldContexts
from multihome.api.responses.items import Item
from multihome.api.responses.translate import to_canonical
from multihome.schema.responses import parse_create
from multihome.state import StoredResponse

from .test_responses_step_context import _answer, _call, _fn_call, _fn_output, _image, _reasoning, _same, _user

PLAIN = [_answer, _fn_call, _fn_output, _image, lambda n: _user(f"u{n}")]


def _req(**extra: Any) -> Any:
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    return parse_create(msgspec.json.encode({"model": "m", "input": "go", "tools": tools, **extra}))


def _turn(n: int, prev: str | None, new: list[Item], output: list[Item]) -> StoredResponse:
    return StoredResponse(f"resp_{n}", "t1", "completed", {"output": output}, new, prev)


def canonical_of(req: Any, context: list[Item], new: list[Item]) -> Any:
    return asyncio.run(to_canonical(req, context, new))


def _context(chain: list[StoredResponse]) -> list[Item]:
    out: list[Item] = []
    for turn in chain:
        out += turn.input
        out += turn.response["output"]
    return out


@pytest.mark.parametrize("seed", range(40))
def test_every_turn_equals_the_whole_conversion(seed: int) -> None:
    rng = random.Random(seed)
    held = HeldContexts()
    chain: list[StoredResponse] = []
    makers = PLAIN + ([_reasoning, _call] if seed % 4 == 0 else [])  # some conversations cannot be held
    for n in range(12):
        extra = {"instructions": f"be brief {n}"} if rng.random() < 0.5 else {}
        req = _req(**extra, **({"temperature": 0.5} if seed % 3 == 0 else {}))
        new = [rng.choice(makers)(100 * n + i) for i in range(rng.randrange(1, 3))]
        got = held.request(req, chain, new, None) if chain else None
        want = canonical_of(req, _context(chain), new)
        if got is not None:
            _same(got, want)
        elif seed % 4 and chain and new[0]["type"] != "function_call":
            pytest.fail(f"turn {n}: a plain conversation was converted whole")
        output = [rng.choice(makers)(100 * n + 50 + i) for i in range(rng.randrange(1, 3))]
        chain = [*chain, _turn(n, chain[-1].id if chain else None, new, output)]


def test_a_turn_converts_only_its_own_items(monkeypatch: pytest.MonkeyPatch) -> None:
    converted: list[int] = []
    real = held_context.chat_messages
    monkeypatch.setattr(
        held_context, "chat_messages", lambda items, *rest: [converted.append(len(items)), real(items, *rest)]
    )
    held, chain, req = HeldContexts(), [_turn(0, None, [_user("u0")], [_answer(0)])], _req()
    held.request(req, chain, [_user("u1")], None)
    assert converted == [2, 1]  # the first turn's two items (nothing held yet), then the new input
    for n in range(1, 30):
        chain = [*chain, _turn(n, chain[-1].id, [_user(f"u{n}")], [_answer(n)])]
        converted.clear()
        got = held.request(req, chain, [_user(f"u{n + 1}")], None)
        assert converted == [2, 1]  # the last turn's input and answer, then the new input: not the 2n before
        assert got is not None
        _same(got, canonical_of(req, _context(chain), [_user(f"u{n + 1}")]))
    assert len(held._items) == 1  # one context kept per conversation


def _four_turns() -> list[StoredResponse]:
    chain = [_turn(0, None, [_user("u0")], [_answer(0)])]
    for n in range(1, 4):
        chain.append(_turn(n, chain[-1].id, [_user(f"u{n}")], [_answer(n)]))
    return chain


def test_a_chain_with_a_deleted_turn_is_converted_again() -> None:
    held, req, chain = HeldContexts(), _req(), _four_turns()
    held.request(req, chain, [_user("next")], None)
    shorter = chain[2:]  # resp_1 deleted: the store's chain of resp_3 now begins at resp_2
    got = held.request(req, shorter, [_user("next")], None)
    assert got is not None
    _same(got, canonical_of(req, _context(shorter), [_user("next")]))
    assert b"u0" not in bytes(got[0].raw["messages"])


def test_what_cannot_be_held_is_left_to_the_whole_conversion() -> None:
    held, req = HeldContexts(), _req()
    chain = [_turn(0, None, [_user("u0")], [_reasoning(0), _answer(0)])]
    assert held.request(req, chain, [_user("u1")], None) is None  # a summary merges with the answer after it
    chain = [_turn(0, None, [_user("u0")], [_answer(0)])]
    assert held.request(req, chain, [_fn_call(1)], None) is None  # it would join the answer's message
    bad = {"type": "function_call_output", "call_id": "", "output": "x"}  # a tool message answering no call
    assert held.request(req, chain, [bad], None) is None  # the whole conversion's 400, with its positions
    assert held.request(req, chain, [_user("u1")], None) is not None


def test_the_memory_held_stays_within_the_bound() -> None:
    """What the kept contexts really hold (their typed messages too, not only the encodings) stays about
    within `max_bytes`: counting the encodings alone let it grow to ~6x."""
    req, held = _req(), HeldContexts(max_bytes=512 << 10)
    gc.collect()
    tracemalloc.start()
    try:
        for conv in range(600):
            chain: list[StoredResponse] = []
            for n in range(5):
                new, out = [_user(f"c{conv} q{n} " + "x" * 40)], [_answer(conv * 100 + n), _fn_call(conv * 100 + n)]
                if chain:
                    held.request(req, chain, new, None)
                chain.append(_turn(conv * 100 + n, chain[-1].id if chain else None, new, out))
        del chain, new, out
        gc.collect()
        with_held, _ = tracemalloc.get_traced_memory()
        accounted = held._bytes
        held._items.clear()
        gc.collect()
        without, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert accounted <= held.max_bytes
    assert with_held - without < 1.5 * held.max_bytes, (with_held - without, accounted)


def test_a_deleted_turn_leaves_no_held_context_with_its_content() -> None:
    held, req, chain = HeldContexts(), _req(), _four_turns()
    held.request(req, chain[:3], [_user("next")], None)
    held.request(req, chain, [_user("next")], None)
    assert any("resp_1" in h.ids for h in held._items.values())
    held.forget("resp_1")  # DELETE of a turn that is not the newest (api/responses/door.py)
    assert not any("resp_1" in h.ids for h in held._items.values())
    assert held._bytes == sum(h.size for h in held._items.values())
