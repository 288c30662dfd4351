"""A tool call and its result travel together: the checks that refuse a turn with either half alone."""

from __future__ import annotations

from multihome.state.pairs import broken_pair, duplicate_call, orphan_output, unanswered_call


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


def test_broken_pair_finds_a_result_whose_call_is_gone_first():
    assert broken_pair([MESSAGE, call("a"), output("a")], [MESSAGE]) is None
    assert broken_pair([MESSAGE, output("a")], [MESSAGE]) == ("orphan", "a")  # its call was deleted
    assert broken_pair([output("a"), call("a")], []) == ("orphan", "a")  # a result before its call answers nothing
    assert broken_pair([call("b"), output("a")], []) == ("orphan", "a")
    assert broken_pair([call("b")], [MESSAGE]) == ("unanswered", "b")


def test_a_call_id_repeated_by_the_new_items_is_found_with_its_index():
    assert duplicate_call([call("a"), output("a")], [MESSAGE]) is None
    assert duplicate_call([call("a")], [output("a")]) is None
    assert duplicate_call([], [call("a"), call("b"), output("b"), output("a")]) is None
    assert duplicate_call([], [MESSAGE, call("a"), call("a")]) == (2, "function_call", "a")
    assert duplicate_call([call("a")], [MESSAGE, call("a")]) == (1, "function_call", "a")
    assert duplicate_call([call("a"), output("a")], [output("a")]) == (0, "function_call_output", "a")
    assert duplicate_call([call("a")], [output("a"), output("a")]) == (1, "function_call_output", "a")
    assert duplicate_call([call("a"), call("a")], [MESSAGE]) is None  # the context's own are not this input's
