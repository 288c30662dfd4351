"""Hostile JSON for the property tests: the values a careless client or a broken upstream sends.

Strings carry control characters, CR/LF, NUL, bidi marks and astral characters (JSON-escaped, as
a client would send them), escaped lone surrogates, and raw bytes that are not UTF-8; numbers run
past 64 bits and past float range; containers nest deeply; field names are as hostile as values.
Bodies are bytes, built by hand where a JSON encoder would refuse (lone surrogates, bad UTF-8).
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

# Characters that break headers, logs and terminals, plus ordinary and astral text.
_NASTY_CHARS = "\x00\x01\x07\x08\t\n\r\x0b\x0c\x1b\x7f\x85\u2028\u2029\u202e\ufeff\uffff"
hostile_text = st.text(
    alphabet=st.one_of(st.sampled_from(_NASTY_CHARS), st.characters(codec="utf-8"), st.sampled_from('"\\/{}[]:,')),
    max_size=40,
)
huge_int = st.one_of(st.integers(), st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, -(10**30)]))
number = st.one_of(huge_int, st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([1e308, -1e308, 5e-324]))
scalar = st.one_of(st.none(), st.booleans(), number, hostile_text)
json_value = st.recursive(
    scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(hostile_text, inner, max_size=4)),
    max_leaves=12,
)

# A long value: an error that names it must show its start only (schema/errors.py `echo`); a message
# holding LONG_RUN repeated it whole (harness.py and hostile_http.py check every refusal for it).
LONG_VALUE = "Zq" * 2500
LONG_RUN = "Zq" * 40

# Raw JSON fragments a JSON encoder never produces but a socket may carry.
_RAW_FRAGMENTS = [
    ('"' + LONG_VALUE + '"').encode(),
    b'"\\ud800"',
    b'"\\udfff x"',
    b'"\\ud83d\\ude00"',
    b'"\xff\xfe"',
    b'"\xed\xa0\x80"',
    b'"\xc0\x80"',
    b"1e400",
    b"-1e400",
    b"123456789012345678901234567890",
    b"NaN",
    b"Infinity",
    b'"\\u0000"',
    b"[]",
    b"{}",
    b"null",
    b'"a\x01b"',
]
raw_fragment = st.sampled_from(_RAW_FRAGMENTS)


def deep(depth: int, leaf: bytes = b"1") -> bytes:
    """`depth` nested arrays and objects around `leaf`, as JSON text."""
    opens, closes = [], []
    for i in range(depth):
        if i % 2:
            opens.append(b'{"k":')
            closes.append(b"}")
        else:
            opens.append(b"[")
            closes.append(b"]")
    return b"".join(opens) + leaf + b"".join(reversed(closes))


deep_value = st.builds(deep, st.sampled_from([64, 200, 600, 900, 960, 990, 1000, 1100, 5000, 100_000]))


def encode(value) -> bytes:
    """JSON text for a Python value; non-ASCII is \\u-escaped, so control characters survive as escapes."""
    return json.dumps(value).encode()


def fragment_or_value(value_strategy=json_value):
    """Either a well-formed JSON value, a hostile raw fragment, deep nesting, or deep nesting
    inside a string (JSON text a translator may decode again: tool arguments, tool results)."""
    return st.one_of(value_strategy.map(encode), raw_fragment, deep_value, deep_value.map(lambda b: encode(b.decode())))


def object_bytes(fields: dict[str, bytes]) -> bytes:
    """A JSON object from already-encoded member values (keys encoded here)."""
    return b"{" + b",".join(encode(k) + b":" + v for k, v in fields.items()) + b"}"


@st.composite
def mutated(draw, base: dict, paths: list[tuple]) -> bytes:
    """`base` (a valid request) with a few members replaced by hostile values or fragments,
    and sometimes a hostile extra field at the top or in a nested object."""
    value = json.loads(json.dumps(base))
    replacements: dict[str, bytes] = {}
    for path in draw(st.lists(st.sampled_from(paths), max_size=3, unique=True)):
        token = f"@@{len(replacements)}@@"
        replacements[token] = draw(fragment_or_value())
        _set(value, path, token)
    if draw(st.booleans()):
        token = f"@@{len(replacements)}@@"
        replacements[token] = draw(fragment_or_value())
        target = value
        if draw(st.booleans()) and paths:
            target = _get(value, draw(st.sampled_from(paths))[:-1])
        if isinstance(target, dict):
            target[draw(hostile_text)] = token
    text = encode(value)
    for token, raw in replacements.items():
        text = text.replace(encode(token), raw)
    return text


def all_paths(value, prefix: tuple = ()) -> list[tuple]:
    """Every member path in a JSON value (object keys and list indices), for `mutated`."""
    out = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        out.append((*prefix, key))
        out.extend(all_paths(inner, (*prefix, key)))
    return out


def _get(value, path):
    for key in path:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and isinstance(key, int) and key < len(value):
            value = value[key]
        else:
            return None
    return value


def _set(value, path, new) -> None:
    parent = _get(value, path[:-1])
    key = path[-1]
    if isinstance(parent, dict) or (isinstance(parent, list) and isinstance(key, int) and key < len(parent)):
        parent[key] = new
