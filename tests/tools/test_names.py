"""MCP tool names as OpenAI function names (`^[a-zA-Z0-9_-]{1,64}$`) and back: valid names kept as
`<label>__<tool>`, others made valid, cut to fit and told apart by a hash, every one mapping back."""

from __future__ import annotations

from multihome.tools.names import FUNCTION_NAME, NameMap


def test_names_map_to_valid_function_names_and_back():
    tools = ["add", "weather.get-current", "a.b", "a_b", "x" * 128, "x" * 127 + "y", "ünï"]
    names = NameMap("crm", tools)
    assert names.function("add") == "crm__add" and names.function("a_b") == "crm__a_b"
    functions = [names.function(t) for t in tools]
    assert len(set(functions)) == len(tools)
    for tool, function in zip(tools, functions):
        assert FUNCTION_NAME.match(function), function
        assert names.tool(function) == tool
    assert names.function("weather.get-current").startswith("crm__weather_get-current_")
    assert names.tool("crm__nothing") is None and names.tool("add") is None
    assert [t for t, _ in names.items()] == [
        "add",
        "a_b",
        "weather.get-current",
        "a.b",
        "x" * 128,
        "x" * 127 + "y",
        "ünï",
    ]


def test_an_exact_name_keeps_its_place_whatever_the_order():
    first, second = NameMap("s", ["a.b", "a_b"]), NameMap("s", ["a_b", "a.b"])
    assert first.function("a_b") == second.function("a_b") == "s__a_b"
    assert first.function("a.b") == second.function("a.b") != "s__a_b"
