"""OpenAI's published schemas, to hold what the gateway returns against: chat completions and their stream
chunks, embeddings, the model list, the Responses and Conversations objects and every stream event, as
`openai/openai-openapi` publishes them, and the official SDK's types; and the request bodies, to show a
test's request is one OpenAI allows (so a refusal of it is the gateway's bug, not the test's).

`openai_published_schemas.json` is the closure of the component schemas named in `ROOTS`, and the list of
published operations, taken from `openapi.json` of openai/openai-openapi at commit `COMMIT`, with the
descriptions left out (nothing else changed). Regenerate it with `python tests/openai_schemas.py <path to that openapi.json>`.

`operations()` lists every published operation ("METHOD /v1/path"), for the route table's checks.

`problems(name, obj)` says what is wrong with `obj` as the schema `name` (JSON Schema 2020-12, as the
OpenAPI 3.1 document is written) and as the SDK's type of it validated strictly (pydantic strict mode:
no coercion). Where the published schema contradicts itself it is patched here, and said why.
"""

from __future__ import annotations

import json
import re
import sys
from functools import cache
from pathlib import Path
from typing import Any

import openai.types as sdk_types
import openai.types.chat as sdk_chat
import openai.types.conversations as sdk_conversations
import openai.types.responses as sdk_responses
import pydantic
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

COMMIT = "f85dbe223d40e1a31cba812ab2d755c7e98a92a3"
FILE = Path(__file__).with_name("openai_published_schemas.json")
ROOTS = (
    "Response",
    "ResponseStreamEvent",
    "ResponseItemList",
    "ConversationResource",
    "ConversationItem",
    "ConversationItemList",
    "DeletedConversationResource",
    "ErrorResponse",
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateEmbeddingResponse",
    "ListModelsResponse",
    "Model",
    "TokenCountsResource",
    # Requests: what OpenAI accepts (no SDK type checked: a request is the test's own).
    "CreateChatCompletionRequest",
    "CreateEmbeddingRequest",
    "CreateResponse",
    "CreateConversationBody",
    "UpdateConversationBody",
    "TokenCountsBody",
)
SDK: dict[str, Any] = {
    "Response": sdk_responses.Response,
    "ResponseStreamEvent": sdk_responses.ResponseStreamEvent,
    "ResponseItemList": sdk_responses.ResponseItemList,
    "ConversationResource": sdk_conversations.Conversation,
    "ConversationItem": sdk_conversations.ConversationItem,
    "ConversationItemList": sdk_conversations.ConversationItemList,
    "DeletedConversationResource": sdk_conversations.ConversationDeletedResource,
    "CreateChatCompletionResponse": sdk_chat.ChatCompletion,
    "CreateChatCompletionStreamResponse": sdk_chat.ChatCompletionChunk,
    "CreateEmbeddingResponse": sdk_types.CreateEmbeddingResponse,
    "Model": sdk_types.Model,
    "TokenCountsResource": sdk_responses.InputTokenCountResponse,
}


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true`, which a few schemas of this 3.1 document still use (the chat chunk's
    `finish_reason`, `logprobs`, `usage`), as JSON Schema says it: the node or null. JSON Schema ignores
    the keyword, so unpatched every chunk OpenAI itself sends (`finish_reason: null`) would be refused."""
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable(v) for k, v in node.items()}
    if node.pop("nullable", False) is True:
        return {"anyOf": [node, {"type": "null"}]}
    return node


def _patched(schemas: dict[str, Any]) -> dict[str, Any]:
    schemas = _nullable(schemas)
    # `MCPApprovalResponseResource` requires a `request_id` it does not define (the SDK's type has no such
    # field either: the item is `approval_request_id`); required as written, no object could be valid.
    item = schemas["MCPApprovalResponseResource"]
    item["required"] = [name for name in item["required"] if name != "request_id"]
    # A list's `first_id`/`last_id` are strings in the schema, but an empty list has neither: OpenAI
    # answers null there (its list endpoints all do), so null is allowed for an empty list only.
    for name in ("ResponseItemList", "ConversationItemList"):
        schemas[name] = {
            "anyOf": [
                schemas[name],
                {
                    "type": "object",
                    "properties": {"data": {"maxItems": 0}, "first_id": {"type": "null"}, "last_id": {"type": "null"}},
                    "required": ["object", "data", "has_more", "first_id", "last_id"],
                },
            ]
        }
    return schemas


@cache
def _validator(name: str) -> Draft202012Validator:
    schemas = _patched(json.loads(FILE.read_text())["schemas"])
    registry = Registry().with_resource(
        "urn:openai", Resource.from_contents({"components": {"schemas": schemas}}, default_specification=DRAFT202012)
    )
    return Draft202012Validator({"$ref": f"urn:openai#/components/schemas/{name}"}, registry=registry)


@cache
def _adapter(sdk: Any) -> pydantic.TypeAdapter:
    """Built once per type: building one costs ~50 ms of CPU for the stream event union (a run checks
    thousands of events), validating with it well under a millisecond."""
    return pydantic.TypeAdapter(sdk)


def problems(name: str, obj: Any) -> list[str]:
    """What makes `obj` invalid as OpenAI's schema `name` and as the SDK's type of it (empty: nothing)."""
    out = []
    for err in _validator(name).iter_errors(obj):
        # The innermost reasons of a union, not just "valid under none of the given schemas".
        inner = sorted({f"{list(c.absolute_path)}: {c.message[:160]}" for c in err.context or ()})
        out.append(f"{list(err.absolute_path)}: {err.message[:300]}" + (f" ({'; '.join(inner[:8])})" if inner else ""))
    sdk = SDK.get(name)
    if sdk is not None:
        try:
            _adapter(sdk).validate_python(obj, strict=True)
        except pydantic.ValidationError as exc:
            out += [f"SDK {name} {e['loc']}: {e['msg'][:200]}" for e in exc.errors()[:8]]
    return out


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if not (k in ("description", "title") and isinstance(v, str))}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _closure(spec: dict[str, Any]) -> dict[str, Any]:
    schemas = spec["components"]["schemas"]
    seen: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(schemas[name]))
    return {name: _strip(schemas[name]) for name in sorted(seen)}


_METHODS = ("get", "put", "post", "delete", "patch")


def _operations(spec: dict[str, Any]) -> list[str]:
    """Every published operation as "METHOD /v1/path" (a `?beta=true` variant is its path's: a query string)."""
    found = {f"{m.upper()} /v1{p.split('?')[0]}" for p, ops in spec["paths"].items() for m in ops if m in _METHODS}
    return sorted(found)


@cache
def operations() -> list[str]:
    """OpenAI's published operations, "METHOD /v1/path" with `{name}` templates (`_operations`)."""
    return json.loads(FILE.read_text())["operations"]


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    body = {
        "source": f"openai/openai-openapi@{COMMIT} openapi.json",
        "schemas": _closure(spec),
        "operations": _operations(spec),
    }
    FILE.write_text(json.dumps(body, separators=(",", ":"), sort_keys=True) + "\n")
