"""Deterministic generators: schema examples, word splitting, vectors, fault parsing."""

from __future__ import annotations

import math

import pytest

from multihome.simulators.content import embedding, fit_words, schema_example, split_words
from multihome.simulators.faults import Fault, FaultError, FaultTable, parse_fault_header


def test_schema_example_covers_common_shapes():
    schema = {
        "type": "object",
        "$defs": {"addr": {"type": "object", "properties": {"zip": {"type": "string", "minLength": 10}}}},
        "properties": {
            "s": {"type": "string"},
            "i": {"type": "integer", "minimum": 5},
            "n": {"type": "number", "maximum": 0.5},
            "b": {"type": "boolean"},
            "e": {"enum": ["x", "y"]},
            "c": {"const": 7},
            "nullable": {"type": ["string", "null"]},
            "any": {"anyOf": [{"type": "null"}, {"type": "integer"}]},
            "ref": {"$ref": "#/$defs/addr"},
            "arr": {"type": "array", "items": {"type": "integer"}, "minItems": 3},
            "when": {"type": "string", "format": "date-time"},
            "all": {"allOf": [{"properties": {"a": {"type": "string"}}}, {"properties": {"b": {"type": "integer"}}}]},
        },
        "required": ["s", "extra"],
    }
    assert schema_example(schema) == {
        "s": "example",
        "i": 5,
        "n": 0.5,
        "b": True,
        "e": "x",
        "c": 7,
        "nullable": "example",
        "any": 1,
        "ref": {"zip": "exampleexa"},
        "arr": [1, 1, 1],
        "when": "2024-01-01T00:00:00Z",
        "all": {"a": "example", "b": 1},
        "extra": "example",
    }


def test_recursive_schema_terminates():
    schema = {
        "$defs": {"node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/node"}}}},
        "$ref": "#/$defs/node",
    }
    out = schema_example(schema)
    depth = 0
    while isinstance(out, dict):
        out = out["child"]
        depth += 1
    assert 1 < depth < 20


def test_words():
    assert split_words("Hello  big world ") == ["Hello", "  big", " world "]
    assert "".join(fit_words("a b c d e", 2)) == "a b c d e" and len(fit_words("a b c d e", 2)) == 2
    assert fit_words("a b", 4) == ["a", " b", " w2", " w3"]


def test_embedding_is_deterministic_unit_vector():
    v = embedding(b"x", 32)
    assert v == embedding(b"x", 32) and v != embedding(b"y", 32)
    assert math.isclose(sum(a * a for a in v), 1.0, rel_tol=1e-5)


def test_fault_header_grammar():
    f = parse_fault_header(" status=503 ; latency_ms=10;;hang ")
    assert (f.status, f.latency_ms, f.hang) == (503, 10, True)
    assert parse_fault_header("throttle=2;").throttle == 2.0
    for bad in ("status=99", "latency_ms=-1", "nope=1", "content_filter=x", "times=2", "chunks=0"):
        with pytest.raises(FaultError):
            parse_fault_header(bad)


def test_fault_table_match_and_times():
    t = FaultTable()
    t.add(Fault(status=500, match="a", times=1))
    t.add(Fault(status=503))
    assert t.take("b").status == 503
    assert t.take("a").status == 500
    assert t.take("a").status == 503  # the matched rule is used up
    t.add(Fault(status=502, match=None))  # same target replaces the catch-all
    assert [r.status for r in t.rules] == [502]


def test_schema_examples_validate_with_jsonschema():
    jsonschema = pytest.importorskip("jsonschema")
    schemas = [
        {
            "type": "object",
            "properties": {"a": {"type": "string", "format": "email", "maxLength": 5}},
            "required": ["a"],
            "additionalProperties": False,
        },
        {"type": "array", "items": {"type": "number", "exclusiveMinimum": 3, "multipleOf": 2}, "minItems": 2},
        {"oneOf": [{"type": "null"}, {"type": "object", "properties": {"k": {"enum": [3, 4]}}}]},
        {
            "$defs": {"p": {"type": "object", "properties": {"x": {"type": "integer", "maximum": -5}}}},
            "type": "object",
            "properties": {"p": {"$ref": "#/$defs/p"}, "q": {"type": ["null", "boolean"]}},
        },
    ]
    for schema in schemas:
        jsonschema.validate(schema_example(schema), schema)
