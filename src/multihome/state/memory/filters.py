"""Metadata filters for memory search and listing, in the shape Mem0's search takes.

    {"topic": "travel"}                                  equality
    {"priority": {"gte": 2}, "tag": {"in": ["a", "b"]}}  operators: eq ne in nin gt gte lt lte
    {"OR": [{"topic": "travel"}, {"topic": "food"}]}     AND / OR / NOT combine filters

Keys at one level are ANDed. A record without the key fails every operator except `ne` and `nin`.
Comparisons between a number and a string are false, not errors. `compile_filter` checks the whole
filter once (a `ValueError` naming the bad part) and returns a predicate over a record's metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from ...schema.errors import echo

Predicate = Callable[[Mapping[str, Any]], bool]
Scalar = str | int | float | bool
MAX_DEPTH = 8
MAX_TERMS = 64
_MISSING = object()


def _comparable(a: Any, b: Any) -> bool:
    number = (int, float)
    return (
        isinstance(a, number) and isinstance(b, number) and not isinstance(a, bool) and not isinstance(b, bool)
    ) or (isinstance(a, str) and isinstance(b, str))


def _eq(a: Any, b: Any) -> bool:
    return (type(a) is type(b) or _comparable(a, b)) and a == b


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "in": lambda a, b: any(_eq(a, v) for v in b),
    "nin": lambda a, b: not any(_eq(a, v) for v in b),
    "gt": lambda a, b: _comparable(a, b) and a > b,
    "gte": lambda a, b: _comparable(a, b) and a >= b,
    "lt": lambda a, b: _comparable(a, b) and a < b,
    "lte": lambda a, b: _comparable(a, b) and a <= b,
}
_LISTS = frozenset({"in", "nin"})


def _scalar(value: Any, where: str) -> Scalar:
    if isinstance(value, str | int | float | bool):
        return value
    raise ValueError(f"{where}: a filter value must be a string, number or boolean")


class Filter:
    """A compiled filter: a predicate over a record's metadata, and `key`, the filter's canonical JSON
    (equal filters, equal keys), by which an index keeps the records it admits (index.py `_admitted`)."""

    __slots__ = ("key", "test")

    def __init__(self, test: Predicate, key: str) -> None:
        self.test = test
        self.key = key

    def __call__(self, meta: Mapping[str, Any]) -> bool:
        return self.test(meta)


def compile_filter(spec: Any) -> Filter:
    """The predicate for `spec` (a JSON object as described above), or ValueError."""
    test = _compile(spec)
    return Filter(test, msgspec.json.encode(spec, order="sorted").decode())


def _compile(spec: Any) -> Predicate:
    terms = [0]

    def build(node: Any, depth: int, where: str) -> Predicate:
        if not isinstance(node, dict):
            raise ValueError(f"{where} must be an object")
        if depth > MAX_DEPTH:
            raise ValueError(f"{where}: filters nest at most {MAX_DEPTH} deep")
        parts: list[Predicate] = []
        for key, cond in node.items():
            terms[0] += 1
            if terms[0] > MAX_TERMS:
                raise ValueError(f"a filter has at most {MAX_TERMS} conditions")
            at = f"{where}.{echo(key)}"  # the path is in the 400's message: a key shown in part
            if key in ("AND", "OR"):
                if not isinstance(cond, list) or not cond:
                    raise ValueError(f"{at} must be a non-empty list of filters")
                subs = [build(c, depth + 1, f"{at}[{i}]") for i, c in enumerate(cond)]
                parts.append(_all(subs) if key == "AND" else _any(subs))
            elif key == "NOT":
                parts.append(_not(build(cond, depth + 1, at)))
            elif isinstance(cond, dict):
                if not cond:
                    raise ValueError(f"{at} names no operator (one of {', '.join(_OPS)})")
                for op, value in cond.items():
                    fn = _OPS.get(op)
                    if fn is None:
                        raise ValueError(f"{at}: unknown operator '{echo(op)}' (one of {', '.join(_OPS)})")
                    if op in _LISTS:
                        if not isinstance(value, list) or not value:
                            raise ValueError(f"{at}.{op} takes a non-empty list")
                        value = [_scalar(v, f"{at}.{op}") for v in value]
                    else:
                        value = _scalar(value, f"{at}.{op}")
                    parts.append(_field(key, fn, value))
            else:
                parts.append(_field(key, _eq, _scalar(cond, at)))
        return _all(parts)

    return build(spec, 0, "filters")


def _field(key: str, fn: Callable[[Any, Any], bool], value: Any) -> Predicate:
    return lambda meta: fn(meta.get(key, _MISSING), value)


def _all(parts: list[Predicate]) -> Predicate:
    if len(parts) == 1:
        return parts[0]
    return lambda meta: all(p(meta) for p in parts)


def _not(inner: Predicate) -> Predicate:
    return lambda meta: not inner(meta)


def _any(parts: list[Predicate]) -> Predicate:
    return lambda meta: any(p(meta) for p in parts)
