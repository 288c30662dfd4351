"""An agent run's step requests built incrementally (api/responses/step_context.py) are the requests
`to_canonical` builds from the whole context at every step: the same raw fields byte for byte, the same
typed request, the same capability needs, the same 400s; and a step converts only what was added."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import msgspec
import pytest

from multihome.api.responses import items as items_module
from multihome.api.responses.items import Item
from multihome.api.responses.step_context import StepContext
from multihome.api.responses.translate import to_canonical
from multihome.schema.errors import ApiError
from multihome.schema.responses import parse_create

FUNCTIONS = [{"type": "function", "function": {"name": "crm__find", "parameters": {"type": "object"}}}]


def _req(**extra: Any) -> Any:
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    body = {"model": "m", "input": "go", "instructions": "be brief", "stream": True, "tools": tools, **extra}
    return parse_create(msgspec.json.encode(body))


def _whole(req: Any, context: list[Item], new: list[Item]) -> Any:
    """What `to_canonical` (a coroutine: it opens thinking blobs first) builds from the whole context."""
    return asyncio.run(to_canonical(req, context, new, FUNCTIONS))


def _user(text: str) -> Item:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def _answer(n: int) -> Item:
    return {
        "type": "message",
        "id": f"msg_{n}",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": f"answer {n}", "annotations": []}],
    }


def _call(n: int) -> Item:
    return {
        "type": "mcp_call",
        "id": f"mcp_{n}",
        "server_label": "crm",
        "name": "find",
        "arguments": f'{{"q": "{n}"}}',
        "output": f"found {n}",
        "error": None,
        "status": "completed",
    }


def _fn_call(n: int) -> Item:
    return {"type": "function_call", "id": f"fc_{n}", "call_id": f"call_{n}", "name": "lookup", "arguments": "{}"}


def _fn_output(n: int) -> Item:
    return {"type": "function_call_output", "call_id": f"call_{n}", "output": f"out {n}"}


def _reasoning(n: int) -> Item:
    return {"type": "reasoning", "id": f"rs_{n}", "summary": [{"type": "summary_text", "text": f"think {n}"}]}


def _listing(n: int) -> Item:
    return {"type": "mcp_list_tools", "id": f"mcpl_{n}", "server_label": "crm", "tools": []}


def _image(n: int) -> Item:
    part = {"type": "input_image", "image_url": f"https://img.example/{n}.png"}
    return {"type": "message", "role": "user", "content": [part]}


def _said(n: int) -> Item:
    return _user(f"u{n}")


MAKERS = [_answer, _call, _call, _fn_call, _fn_output, _reasoning, _listing, _said]


def _same(got: tuple[Any, list[str]], want: tuple[Any, list[str]]) -> None:
    (g, g_dropped), (w, w_dropped) = got, want
    assert g_dropped == w_dropped
    assert {k: bytes(v) for k, v in g.raw.items()} == {k: bytes(v) for k, v in w.raw.items()}
    assert list(g.raw) == list(w.raw)  # the fields in the same order
    assert msgspec.json.encode(g.request) == msgspec.json.encode(w.request)
    assert g.needs == w.needs
    assert g.reasoning_summary == w.reasoning_summary


@pytest.mark.parametrize("seed", range(40))
def test_every_step_equals_the_whole_conversion(seed: int) -> None:
    rng = random.Random(seed)
    req = _req(tool_choice="required", reasoning={"effort": "low", "summary": "auto"}) if seed % 2 else _req()
    context = [rng.choice(MAKERS)(100 + i) for i in range(rng.randrange(0, 6))]
    new = [_user("start"), *([_image(0)] if seed % 5 == 0 else [])]
    steps = StepContext(req, context, new, FUNCTIONS)
    output: list[Item] = []
    for step in range(1, 25):
        later = step > 1
        whole_req = msgspec.structs.replace(req, tool_choice="auto") if later and req.tool_choice == "required" else req
        _same(steps.request(output, tool_choice_auto=later), _whole(whole_req, context, [*new, *output]))
        for _ in range(rng.randrange(1, 4)):
            output.append(rng.choice(MAKERS)(len(output)))


def test_a_step_converts_only_what_was_added(monkeypatch: pytest.MonkeyPatch) -> None:
    converted: list[int] = []
    real = items_module.chat_messages

    def counting(
        items: list[Item], messages: list[Item], asked: dict[str, Item] | None = None, thinking: Any = None
    ) -> None:
        converted.append(len(items))
        real(items, messages, asked, thinking)

    monkeypatch.setattr("multihome.api.responses.step_context.chat_messages", counting)
    steps = StepContext(_req(), [], [_user("start")], FUNCTIONS)
    output: list[Item] = []
    steps.request(output)  # the first step: the whole context, through to_canonical's own path
    for n in range(30):
        output += [_call(n)]
        converted.clear()
        steps.request(output, tool_choice_auto=True)
        assert converted == [1]  # the one item added, not the run's 1 + n


def test_a_reasoning_summary_waiting_for_its_answer_is_merged_as_a_whole_build_merges_it() -> None:
    req = _req()
    steps = StepContext(req, [], [_user("start")], FUNCTIONS)
    output: list[Item] = [_call(0), _reasoning(1)]
    steps.request(output)
    output.append(_answer(2))  # opens with the summary: one assistant message, not two
    got = steps.request(output, tool_choice_auto=True)
    _same(got, _whole(req, [], [_user("start"), *output]))
    messages = msgspec.json.decode(bytes(got[0].raw["messages"]))
    assert messages[-1]["content"].startswith("(reasoning summary) think 1")


def test_a_bad_added_item_is_the_400_of_the_whole_request() -> None:
    req = _req()
    steps = StepContext(req, [], [_user("start")], FUNCTIONS)
    output: list[Item] = [_call(0)]
    steps.request(output)
    bad = {"type": "function_call_output", "call_id": "", "output": "x"}  # a tool message answering no call
    output.append(bad)
    with pytest.raises(ApiError) as incremental:
        steps.request(output, tool_choice_auto=True)
    with pytest.raises(ApiError) as whole:
        _whole(req, [], [_user("start"), *output])
    assert incremental.value.status == whole.value.status == 400
    assert incremental.value.body.message == whole.value.body.message
