"""The admin field limits as pure functions: each problem names the path and the limit, and a
hostile value (100 000 levels deep, huge numbers) is judged without recursion or a crash."""

from __future__ import annotations

import random

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


def test_the_bulk_check_of_a_string_list_agrees_with_text_on_every_entry():
    # plain_strings stands for one `text` call per entry (a policy's 20,000 entries); it must never take a list
    # that `text` refuses an entry of.
    rng = random.Random(7)
    pieces = ["a", "eu-*", " ", "", "x" * 200, "x" * 201, "\n", "\x7f", "\u2028", "é", "*", "\t", "ok"]
    for _ in range(3000):
        values = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 3))) for _ in range(rng.randint(0, 5))] + (
            [7] if rng.random() < 0.05 else []
        )
        for required in (True, False):
            each = all(fields.text(v, "f", max_len=200, required=required) is None for v in values)
            assert fields.plain_strings(values, 200, required=required) == each, (values, required)
