"""OpenAI embeddings <-> Bedrock InvokeModel bodies, picked by model id.

- Amazon Titan text embeddings (`amazon.titan-embed-text-*`): `{"inputText", "dimensions",
  "normalize"}` -> `{"embedding", "inputTextTokenCount"}`. One text per call: a list of one string
  is accepted, longer lists are refused with a 400 (the adapter interface sends one upstream
  call per request, and silently embedding only the first item would be wrong).
- Cohere embed v3 (`cohere.embed-*`): `{"texts", "input_type": "search_document"}` ->
  `{"embeddings": [[...]]}`; up to 96 texts per call.

The response translator must know the client's `encoding_format`, which is not in Bedrock's
answer: it is kept in a context variable set while the request is built. Both run in the same
task (the attempt loop builds, sends and translates within one coroutine), so concurrent
requests never see each other's value.
"""

from __future__ import annotations

import contextvars
from typing import Any

import msgspec

from ...schema import estimate
from ...schema.bounded import Decoder
from ...schema.embeddings import ParsedEmbeddings
from ...schema.errors import bad_request
from .. import canonical_in
from ..openai_out import embedding_base64

PROVIDER = "AWS Bedrock"
COHERE_MAX_TEXTS = 96
_encoding: contextvars.ContextVar[str] = contextvars.ContextVar("bedrock_encoding_format", default="float")
_encode = msgspec.json.encode
_GEO_PREFIXES = ("us.", "eu.", "apac.", "us-gov.", "jp.", "au.", "global.")


def family(model: str) -> str | None:
    """'titan' or 'cohere' from a foundation-model or inference-profile id."""
    base = model.rsplit("/", 1)[-1]  # an ARN ends with the model or profile id
    for prefix in _GEO_PREFIXES:
        if base.startswith(prefix):
            base = base[len(prefix) :]
            break
    if base.startswith("amazon.titan-embed"):
        return "titan"
    if base.startswith("cohere.embed"):
        return "cohere"
    return None


def _texts(parsed: ParsedEmbeddings) -> list[str]:
    raw = parsed.request.input
    items = [raw] if isinstance(raw, str) else list(raw)
    if not all(isinstance(item, str) for item in items):
        raise bad_request(
            "AWS Bedrock embeddings take text input, not token arrays.", param="input", code="unsupported_parameter"
        )
    return items  # type: ignore[return-value]


def invoke_body(parsed: ParsedEmbeddings, model: str) -> tuple[bytes, list[str]]:
    req = parsed.request
    texts = _texts(parsed)
    kind = family(model)
    dropped = [
        k
        for k in parsed.raw
        if k not in ("model", "input", "encoding_format", "dimensions") and bytes(parsed.raw[k]) != b"null"
    ]
    _encoding.set(req.encoding_format or "float")
    if kind == "titan":
        if len(texts) != 1:
            raise bad_request(
                f"The Titan embeddings model behind this deployment embeds one text per call; got {len(texts)}. "
                "Send one string per request.",
                param="input",
                code="unsupported_parameter",
            )
        body: dict[str, Any] = {"inputText": texts[0], "normalize": True}
        if req.dimensions is not None:
            body["dimensions"] = req.dimensions
        return _encode(body), dropped
    if kind == "cohere":
        if req.dimensions is not None:
            raise canonical_in.unsupported("dimensions", PROVIDER + " Cohere embed v3 (fixed vector size)")
        if len(texts) > COHERE_MAX_TEXTS:
            raise bad_request(
                f"Cohere embed on AWS Bedrock takes at most {COHERE_MAX_TEXTS} texts per call.", param="input"
            )
        return _encode({"texts": texts, "input_type": "search_document"}), dropped
    raise bad_request(
        f"Deployment model '{model}' is not a Bedrock embeddings model this gateway knows "
        "(amazon.titan-embed-text-* or cohere.embed-*).",
        param="model",
    )


class _Titan(msgspec.Struct):
    embedding: list[float]
    inputTextTokenCount: int = 0


class _Cohere(msgspec.Struct):
    embeddings: list[list[float]]
    texts: list[str] = []  # the inputs, echoed


INPUT_TOKENS_HEADER = "x-amzn-bedrock-input-token-count"


_titan = Decoder(_Titan)
_cohere = Decoder(_Cohere)


def openai_embeddings(body: bytes, model: str, header_tokens: str | None) -> bytes:
    """`header_tokens`: the `x-amzn-bedrock-input-token-count` response header, where InvokeModel
    reports the count for every model (Cohere's body has none)."""
    try:
        if family(model) == "titan":
            t = _titan.decode(body)
            vectors, tokens = [t.embedding], t.inputTextTokenCount
        else:
            c = _cohere.decode(body)
            # Without the header (a proxy dropped it), the echoed texts give an estimate, not zero.
            vectors, tokens = c.embeddings, sum(len(t) for t in c.texts) // estimate.CHARS_PER_TOKEN
    except msgspec.DecodeError as exc:
        raise ValueError(f"not an InvokeModel embeddings response: {exc}") from None
    if header_tokens is not None and header_tokens.isdigit():
        tokens = int(header_tokens)
    b64 = _encoding.get() == "base64"
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": embedding_base64(v) if b64 else v,
        }
        for i, v in enumerate(vectors)
    ]
    return _encode(
        {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    )
