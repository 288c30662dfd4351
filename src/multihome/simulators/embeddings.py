"""Embeddings: validate ``input`` and build deterministic unit vectors."""

from __future__ import annotations

import base64
import struct

import msgspec

from .chat import BadRequest
from .content import embedding, estimate_tokens

MAX_INPUTS = 2048
MAX_DIMENSIONS = 8192


def _inputs(raw) -> list[tuple[bytes, int]]:
    """(hash key, token count) per input; accepts str, [str], [int] and [[int]]."""
    if isinstance(raw, str):
        if not raw:
            raise BadRequest("'$.input' is invalid: an empty string is not allowed.", "input", "invalid_value")
        return [(raw.encode(), estimate_tokens(raw))]
    if not isinstance(raw, list) or not raw:
        raise BadRequest("'$.input' is invalid: expected a string or a non-empty array.", "input", "invalid_value")
    if len(raw) > MAX_INPUTS:
        raise BadRequest(f"'$.input' is invalid: at most {MAX_INPUTS} inputs.", "input", "invalid_value")
    if all(isinstance(t, int) and not isinstance(t, bool) for t in raw):  # one token array
        return [(msgspec.json.encode(raw), len(raw))]
    out = []
    for item in raw:
        if isinstance(item, str) and item:
            out.append((item.encode(), estimate_tokens(item)))
        elif isinstance(item, list) and item and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
            out.append((msgspec.json.encode(item), len(item)))
        else:
            raise BadRequest(
                "'$.input' is invalid: items must be non-empty strings or token arrays.", "input", "invalid_value"
            )
    return out


def render_embeddings(body: dict, model: str, default_dims: int) -> dict:
    if "input" not in body:
        raise BadRequest("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise BadRequest(
            "Invalid value for 'encoding_format': expected 'float' or 'base64'.", "encoding_format", "invalid_value"
        )
    dims = body.get("dimensions")
    if dims is None:
        dims = default_dims
    elif isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= MAX_DIMENSIONS:
        raise BadRequest(
            f"Invalid 'dimensions': expected an integer between 1 and {MAX_DIMENSIONS}.", "dimensions", "invalid_value"
        )
    data = []
    tokens = 0
    for i, (key, n) in enumerate(_inputs(body["input"])):
        vec = embedding(key, dims)
        tokens += n
        value = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if fmt == "base64" else vec
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
