"""Deterministic content: token estimates, word splitting, JSON-Schema examples, vectors.

Nothing here is random: the same input always gives the same output, so tests and benchmarks
can assert exact replies."""

from __future__ import annotations

import hashlib
import math
import re
import struct
from typing import Any

CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """~4 characters per token, at least 1."""
    return max(1, (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN)


def truncate_to_tokens(text: str, tokens: int) -> str:
    return text[: tokens * CHARS_PER_TOKEN]


def short_hash(*parts: bytes | str, size: int = 12) -> str:
    h = hashlib.blake2b(digest_size=size)
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\x00")
    return h.hexdigest()


def text_of(content: Any) -> str:
    """The text of a message ``content``: a string, or the ``text`` parts of a part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict):
                t = part.get("text")
                if isinstance(t, str):
                    out.append(t)
        return " ".join(out)
    return ""


def count_images(messages: list) -> int:
    n = 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    n += 1
    return n


_WORD = re.compile(r"\s*\S+")


def split_words(text: str) -> list[str]:
    """Split so that ``"".join(parts) == text`` and each part is one word with its leading space."""
    parts = _WORD.findall(text)
    tail = len("".join(parts))
    if tail < len(text):  # trailing whitespace
        if parts:
            parts[-1] += text[tail:]
        else:
            parts = [text]
    return parts


def fit_words(text: str, n: int) -> list[str]:
    """Exactly ``n`` chunks: extra words are merged, missing ones padded with `` wK`` fillers."""
    words = split_words(text) or [""]
    if len(words) < n:
        words = words + [f" w{k}" for k in range(len(words), n)]
    elif len(words) > n:
        q, r = divmod(len(words), n)  # first r groups get one extra word
        merged, i = [], 0
        for g in range(n):
            size = q + (1 if g < r else 0)
            merged.append("".join(words[i : i + size]))
            i += size
        words = merged
    return words


def split_every(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


# -- JSON Schema examples ------------------------------------------------------------------

_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com",
    "url": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "hostname": "example.com",
}
_MAX_DEPTH = 12


def schema_example(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A value that validates against ``schema`` for the usual subset of JSON Schema used in
    tool parameters and structured outputs: strings "example", numbers 1, booleans true,
    enum/const first value, every object property (so strict mode's "all required" holds),
    arrays of one item (or minItems), $ref to #/$defs or #/definitions, anyOf/oneOf first branch,
    allOf merged."""
    if root is None:
        root = schema
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None if depth > _MAX_DEPTH else "example"
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return schema_example(_resolve(ref, root), root, depth + 1)
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return schema_example((non_null or options)[0], root, depth + 1)
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        return _merge_all_of(schema, all_of, root, depth)
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), typ[0] if typ else None)
    if typ is None:
        if "properties" in schema:
            typ = "object"
        elif "items" in schema:
            typ = "array"
    if typ == "object":
        props = schema.get("properties")
        out = {}
        if isinstance(props, dict):
            for name, sub in props.items():
                out[name] = schema_example(sub, root, depth + 1)
        for name in schema.get("required") or ():
            if isinstance(name, str) and name not in out:
                out[name] = "example"
        return out
    if typ == "array":
        items = schema.get("items")
        if isinstance(items, list):  # tuple form
            return [schema_example(s, root, depth + 1) for s in items]
        count = max(1, int(schema.get("minItems") or 0))
        if schema.get("maxItems") == 0:
            count = 0
        return [schema_example(items if isinstance(items, dict) else {}, root, depth + 1) for _ in range(count)]
    if typ in ("integer", "number"):
        return _number(schema, typ == "integer")
    if typ == "boolean":
        return True
    if typ == "null":
        return None
    return _string(schema)


def _merge_all_of(schema: dict, parts: list, root: Any, depth: int) -> Any:
    merged: dict = {k: v for k, v in schema.items() if k != "allOf"}
    props = dict(merged.get("properties") or {})
    required = list(merged.get("required") or [])
    for part in parts:
        if isinstance(part, dict) and isinstance(part.get("$ref"), str):
            part = _resolve(part["$ref"], root)
        if not isinstance(part, dict):
            continue
        props.update(part.get("properties") or {})
        required.extend(part.get("required") or [])
        for k, v in part.items():
            merged.setdefault(k, v)
    merged["properties"] = props
    merged["required"] = required
    return schema_example(merged, root, depth + 1)


def _resolve(ref: str, root: Any) -> Any:
    if not ref.startswith("#"):
        return {}
    node = root
    for part in ref.lstrip("#/").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node


def _number(schema: dict, integer: bool) -> int | float:
    value: float = 1
    lo = schema.get("minimum")
    hi = schema.get("maximum")
    xlo = schema.get("exclusiveMinimum")
    xhi = schema.get("exclusiveMaximum")
    if isinstance(lo, (int, float)) and value < lo:
        value = lo
    if isinstance(xlo, (int, float)) and value <= xlo:
        value = xlo + 1
    if isinstance(hi, (int, float)) and value > hi:
        value = hi
    if isinstance(xhi, (int, float)) and value >= xhi:
        value = xhi - 1
    mult = schema.get("multipleOf")
    if isinstance(mult, (int, float)) and mult > 0 and value % mult:
        value = math.ceil(value / mult) * mult
    return int(value) if integer else value


def _string(schema: dict) -> str:
    fmt = schema.get("format")
    s = _FORMATS.get(fmt, "example") if isinstance(fmt, str) else "example"
    lo = schema.get("minLength")
    hi = schema.get("maxLength")
    if isinstance(lo, int) and len(s) < lo:
        s = (s * (lo // len(s) + 1))[:lo]
    if isinstance(hi, int) and len(s) > hi:
        s = s[:hi]
    return s


# -- embeddings ----------------------------------------------------------------------------


def embedding(key: bytes, dims: int) -> list[float]:
    """A unit vector of ``dims`` float32-representable numbers derived from a hash of ``key``."""
    raw = b""
    counter = 0
    while len(raw) < dims * 4:
        raw += hashlib.blake2b(key + counter.to_bytes(4, "little"), digest_size=64).digest()
        counter += 1
    ints = struct.unpack(f"<{dims}I", raw[: dims * 4])
    vec = [(i / 2147483647.5) - 1.0 for i in ints]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    # Round-trip through float32 so the float and base64 encodings carry the same numbers.
    return list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f", *(v / norm for v in vec))))
