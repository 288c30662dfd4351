"""A tool call and its result travel together: the checks that refuse a turn with either half alone."""

from __future__ import annotations

from multihome.state.pairs import orphan_output, unanswered_call


def call(call_id: str) -> dict:
    return {"type": "function_call", "call_id": call_id, "name": "f", "arguments": "{}"}


def output(call_id: str) -> dict:
    return {"type": "function_call_output", "call_id": call_id, "output": "x"}


MESSAGE = {"type": "message", "role": "user", "content": []}


def test_a_call_no_output_answers_is_found_in_the_context_or_the_new_input():
    assert unanswered_call([], []) is None
    assert unanswered_call([MESSAGE, call("a"), output("a")], [MESSAGE]) is None
    assert unanswered_call([MESSAGE, call("a")], [MESSAGE]) == "a"  # the previous turn's call, never answered
    assert unanswered_call([call("a")], [output("a")]) is None  # this turn answers it
    assert unanswered_call([call("a"), call("b")], [output("b")]) == "a"  # parallel calls: each needs its output
    assert unanswered_call([], [MESSAGE, call("c")]) == "c"
    assert unanswered_call([call("a")], [output("a"), call("d"), output("d")]) is None


def test_an_output_without_its_call_is_found_with_its_index():
    assert orphan_output([call("a")], [output("a")]) is None
    assert orphan_output([], [MESSAGE, output("z")]) == (1, "z")
    assert orphan_output([], [call("y"), output("y")]) is None
