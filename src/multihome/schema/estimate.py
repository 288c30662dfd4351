"""Cheap request-size estimates for planning: no tokenizer on the hot path.

About four characters per token for English text is the usual rule of thumb; images count a
flat amount; audio and files by the size of their data (never nothing: the estimate is what
admission reserves a budget for). The estimate only has to be good enough to skip a deployment whose window is
clearly too small; an upstream context-overflow decline catches the rest. It lives in schema/
because routing (planning), providers (Bedrock's embeddings usage), accounting and the front
doors all count with it, and schema/ is the layer every one of them may import.
"""

from __future__ import annotations

from .chat import ChatRequest
from .embeddings import EmbeddingsRequest

CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 800
# Audio and files are read from the size of their JSON (base64 data, mostly), not decoded. Audio: a token
# per 256 characters, about 192 bytes, is at least what audio of 16 kbit/s and up costs at the ~10 tokens
# a second models bill for it (more for WAV). Files (PDFs: each page's text and an image of it): a token
# per 32 characters, 24 bytes, and at least FILE_TOKENS, which is also the count of a file sent by id.
AUDIO_CHARS_PER_TOKEN = 256
FILE_CHARS_PER_TOKEN = 32
FILE_TOKENS = 1000
PER_MESSAGE_TOKENS = 4
DEFAULT_OUTPUT_TOKENS = 1024  # for cost estimates when the client sets no limit


def prompt_tokens(req: ChatRequest) -> int:
    messages = req.messages
    tokens = PER_MESSAGE_TOKENS * len(messages)
    chars = 0
    for msg in messages:
        content = msg.content
        if isinstance(content, str):
            chars += len(content)
        elif content:
            for part in content:
                if part.text:
                    chars += len(part.text)
                elif part.type == "image_url":
                    tokens += IMAGE_TOKENS
                elif part.type == "input_audio":
                    tokens += 1 + len(part.input_audio) // AUDIO_CHARS_PER_TOKEN
                elif part.type == "file":
                    tokens += max(FILE_TOKENS, len(part.file) // FILE_CHARS_PER_TOKEN)
        if msg.tool_calls:
            for call in msg.tool_calls:
                chars += len(call.function.name) + len(call.function.arguments)
    if req.tools:
        for tool in req.tools:
            if tool.function is not None:
                chars += len(tool.function.name) + len(tool.function.description or "") + len(tool.function.parameters)
    return tokens + chars // CHARS_PER_TOKEN


def embedding_tokens(req: EmbeddingsRequest) -> int:
    """Texts at four characters per token; token-id arrays count exactly."""
    items = [req.input] if isinstance(req.input, str) else req.input
    if items and all(isinstance(i, int) for i in items):
        return len(items)  # one pre-tokenized input
    return sum(
        len(i) if isinstance(i, list) else -(-len(i) // CHARS_PER_TOKEN) for i in items if not isinstance(i, int)
    )


def input_tokens(req: ChatRequest | EmbeddingsRequest | None) -> int:
    if isinstance(req, EmbeddingsRequest):
        return embedding_tokens(req)
    return prompt_tokens(req) if req is not None else 0


def admission(req: ChatRequest | EmbeddingsRequest | None) -> tuple[int, int]:
    """`(input_tokens(req), choices(req))` in one call: what admission reserves for, once per call."""
    if isinstance(req, ChatRequest):
        n, best_of = req.n, req.best_of
        return prompt_tokens(req), 1 if n is None and best_of is None else max(n or 1, best_of or 1)
    return input_tokens(req), 1


def output_tokens(req: ChatRequest) -> int | None:
    """The output cap of one choice (None: the client set none)."""
    return req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens


def choices(req: ChatRequest | EmbeddingsRequest | None) -> int:
    """How many outputs the call generates, each up to the output cap: chat's `n`, or `best_of`
    where an OpenAI-compatible upstream honours it (it generates best_of and returns n)."""
    if not isinstance(req, ChatRequest):
        return 1  # embeddings produce no output tokens; the Anthropic door has no `n`
    n, best_of = req.n, req.best_of
    if n is None and best_of is None:
        return 1  # the usual call: no max() to ask
    return max(n or 1, best_of or 1)
