"""The admin field limits as pure functions: each problem names the path and the limit, and a
hostile value (100 000 levels deep, huge numbers) is judged without recursion or a crash."""

from __future__ import annotations

from multihome.schema import admin_fields as fields


def test_metadata_within_limits_passes_and_each_limit_names_the_path():
    assert fields.metadata({"team": "ml", "tags": ["a", "b"], "cost": {"centre": 42, "ok": True, "x": None}}) is None
    assert fields.metadata([]).message == "metadata must be a JSON object"
    deep: dict = {}
    node = deep
    for _ in range(100_000):
        node["a"] = {}
        node = node["a"]
    found = fields.metadata(deep)
    assert found.field == "metadata.a.a.a.a" and "4 levels" in found.message
    assert fields.metadata({"x": [1, [2, [3, [4]]]]}).field == "metadata.x[1][1][1]"
    assert fields.metadata({"n": -(2**63) - 1}).field == "metadata.n"
    assert fields.metadata({"n": float("inf")}).message == "metadata.n: numbers must be finite"
    assert fields.metadata({"n": object()}).field == "metadata.n"
    assert "larger than 4096 bytes" in fields.metadata({str(i): "v" * 999 for i in range(5)}).message


def test_text_and_string_lists():
    assert fields.text("acme", "name") is None
    assert fields.text("  ", "name").message == "name must be a non-empty string"
    assert fields.text("", "note", required=False) is None
    assert fields.text(7, "name").message == "name must be a string"
    assert fields.text("x" * 201, "name").message == "name is longer than 200 characters (201)"
    assert fields.strings("chat", "scopes").message == "scopes must be a list of strings"
    assert fields.strings(["a", ""], "scopes").field == "scopes[1]"
    assert fields.strings(["a"] * 101, "scopes").message == "scopes has more than 100 entries (101)"
