"""OpenAI embeddings request: validated, forwarded with only the model replaced."""

from __future__ import annotations

import msgspec

from .bounds import MAX_EMBEDDING_INPUTS, MAX_EMBEDDING_TOKENS, MAX_INT, count
from .decoding import decode_views
from .errors import bad_request


class EmbeddingsRequest(msgspec.Struct):
    model: str
    # str, list[str], list[int] or list[list[int]]; item types are checked in parse_embeddings.
    input: str | list[str | int | list[int]]
    encoding_format: str | None = None
    dimensions: int | None = None
    user: str | None = None


_typed = msgspec.json.Decoder(EmbeddingsRequest)


class ParsedEmbeddings(msgspec.Struct):
    request: EmbeddingsRequest
    raw: dict[str, msgspec.Raw]
    needs: frozenset[str] = frozenset({"embeddings"})
    stream: bool = False


def parse_embeddings(body: bytes) -> ParsedEmbeddings:
    raw, req = decode_views(body, _typed)
    if not req.model:
        raise bad_request("'model' must be a non-empty string naming a model group.", param="model")
    if isinstance(req.input, str):
        if not req.input:
            raise bad_request("'input' must not be empty.", param="input")
    elif not req.input or len(req.input) > MAX_EMBEDDING_INPUTS:
        raise bad_request(f"'input' must hold between 1 and {MAX_EMBEDDING_INPUTS} items.", param="input")
    elif len({type(item) for item in req.input}) > 1:
        raise bad_request(
            "'input' must be a string, a list of strings, a list of tokens or a list of token lists.", param="input"
        )
    elif any(item == "" or item == [] for item in req.input):
        raise bad_request("'input' must not contain empty items.", param="input")
    if req.encoding_format not in (None, "float", "base64"):
        raise bad_request("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    count(req.dimensions, "dimensions")
    if isinstance(req.input, list) and not isinstance(req.input[0], str):
        tokens = [t for i in req.input if not isinstance(i, str) for t in (i if isinstance(i, list) else (i,))]
        if len(tokens) > MAX_EMBEDDING_TOKENS:  # OpenAI's own limit and words
            raise bad_request(
                f"Requested {len(tokens)} tokens, max {MAX_EMBEDDING_TOKENS} tokens per request.",
                param="input",
                code="max_tokens_per_request",
            )
        if not all(0 <= t <= MAX_INT for t in tokens):  # token ids: never negative, never past any vocabulary
            raise bad_request(f"'input' token ids must be integers from 0 to {MAX_INT}.", param="input")
    return ParsedEmbeddings(request=req, raw=raw)
