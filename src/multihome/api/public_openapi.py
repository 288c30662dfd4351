"""The OpenAPI 3.1 document of the client-facing endpoints (`GET /openapi.json`, no key needed).

It describes what *this gateway* accepts and returns on its OpenAI- and Anthropic-compatible
doors, not the whole of either vendor's API. Field names, types, enums, bounds and required
fields were checked against OpenAI's published schema (github.com/openai/openai-openapi,
`openapi.json`, info.version 2.3.0) and Anthropic's Messages API reference
(/work/shared/reference/protocols.md section 6); the text is ours. Where the gateway is
stricter than the vendor (Anthropic's `temperature` 0..1, at most four `stop_sequences`) or
adds something (the `multihome` routing extension, the `x-multihome-*` headers), this says so.

`ROUTES` is what the document says of each public route; the document is built from it and the
gateway serves it encoded once (api/gateway.py). Tests check it names exactly the routes of the
gateway's route table (api/routes.py) and that every route the gateway dispatches is in it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from ..policy.pins import WORK_KINDS
from ..schema.bounds import MAX_ITEMS, MAX_TOOLS, MAX_TOOLS_OTHER
from ..schema.responses import INCLUDABLE

Schema = dict[str, Any]  # a JSON Schema (or OpenAPI) fragment, encoded as it is built

OPENAI, ANTHROPIC, NONE = "openai", "anthropic", "none"  # which door (auth scheme, error envelope)


@dataclass(frozen=True)
class PublicRoute:
    method: str
    path: str
    operation_id: str
    summary: str
    door: str
    request: str | None = None  # a schema name under components/schemas
    response: str | None = None
    stream: str | None = None  # the schema of one SSE event's data when the request asks to stream
    alias_of: str | None = None  # the same handler under another path (OpenAI SDKs with a base URL lacking /v1)


ROUTES = [
    PublicRoute(
        "POST",
        "/v1/chat/completions",
        "createChatCompletion",
        "Chat completion (unary or SSE stream), routed across the model group's deployments",
        OPENAI,
        "ChatCompletionRequest",
        "ChatCompletion",
        "ChatCompletionChunk",
    ),
    PublicRoute(
        "POST",
        "/v1/embeddings",
        "createEmbedding",
        "Embeddings, routed across the model group's deployments",
        OPENAI,
        "EmbeddingsRequest",
        "EmbeddingsResponse",
    ),
    PublicRoute("GET", "/v1/models", "listModels", "The model groups this gateway serves", OPENAI, None, "ModelList"),
    PublicRoute("GET", "/v1/models/{model}", "retrieveModel", "One model group", OPENAI, None, "Model"),
    PublicRoute(
        "POST",
        "/v1/route/explain",
        "explainRoute",
        "The routing plan a chat or embeddings request would get "
        "(computed by the same code as a real call; nothing is sent upstream)",
        OPENAI,
        "RouteExplainRequest",
        "RouteExplanation",
    ),
    PublicRoute(
        "POST",
        "/v1/messages",
        "createMessage",
        "Anthropic Messages API (unary or SSE stream), translated onto the same routing as chat completions",
        ANTHROPIC,
        "MessagesRequest",
        "Message",
        "MessageStreamEvent",
    ),
    PublicRoute(
        "POST",
        "/v1/messages/count_tokens",
        "countMessageTokens",
        "Anthropic token counting for a Messages request",
        ANTHROPIC,
        "CountTokensRequest",
        "TokenCount",
    ),
    PublicRoute(
        "POST",
        "/v1/responses",
        "createResponse",
        "OpenAI Responses API (unary or SSE stream): the turn's context rebuilt from the gateway's store and "
        "routed like a chat completion (docs/responses.md)",
        OPENAI,
        "ResponseCreateRequest",
        "Response",
        "ResponseStreamEvent",
    ),
    PublicRoute(
        "POST",
        "/v1/responses/input_tokens",
        "countResponseInputTokens",
        "The input tokens a Responses request would send, with its stored context: the gateway's estimate "
        "(about four characters a token), no provider called, nothing stored or metered (docs/responses.md)",
        OPENAI,
        "ResponseInputTokensRequest",
        "ResponseInputTokens",
    ),
    PublicRoute(
        "GET",
        "/v1/responses/{response_id}",
        "getResponse",
        "A stored response (a background one as it is now); `?stream=true&starting_after=N` streams a background "
        "response's events after N, then the live ones",
        OPENAI,
        None,
        "Response",
    ),
    PublicRoute(
        "DELETE", "/v1/responses/{response_id}", "deleteResponse", "Delete a stored response", OPENAI, None, "Deleted"
    ),
    PublicRoute(
        "POST",
        "/v1/responses/{response_id}/cancel",
        "cancelResponse",
        "Cancel a background response (idempotent; a foreground one answers 400)",
        OPENAI,
        None,
        "Response",
    ),
    PublicRoute(
        "GET",
        "/v1/responses/{response_id}/input_items",
        "listInputItems",
        "The input items of a stored response (cursor pages)",
        OPENAI,
        None,
        "ItemList",
    ),
    PublicRoute(
        "POST",
        "/v1/conversations",
        "createConversation",
        "Create a conversation, with initial items and metadata",
        OPENAI,
        "ConversationCreateRequest",
        "Conversation",
    ),
    PublicRoute(
        "GET", "/v1/conversations/{conversation_id}", "getConversation", "A conversation", OPENAI, None, "Conversation"
    ),
    PublicRoute(
        "POST",
        "/v1/conversations/{conversation_id}",
        "updateConversation",
        "Replace a conversation's metadata",
        OPENAI,
        "ConversationUpdateRequest",
        "Conversation",
    ),
    PublicRoute(
        "DELETE",
        "/v1/conversations/{conversation_id}",
        "deleteConversation",
        "Delete a conversation and its items",
        OPENAI,
        None,
        "Deleted",
    ),
    PublicRoute(
        "GET",
        "/v1/conversations/{conversation_id}/items",
        "listConversationItems",
        "A conversation's items (cursor pages)",
        OPENAI,
        None,
        "ItemList",
    ),
    PublicRoute(
        "POST",
        "/v1/conversations/{conversation_id}/items",
        "createConversationItems",
        "Add items to a conversation",
        OPENAI,
        "ConversationItemsRequest",
        "ItemList",
    ),
    PublicRoute(
        "GET",
        "/v1/conversations/{conversation_id}/items/{item_id}",
        "getConversationItem",
        "One item of a conversation",
        OPENAI,
        None,
        "Item",
    ),
    PublicRoute(
        "DELETE",
        "/v1/conversations/{conversation_id}/items/{item_id}",
        "deleteConversationItem",
        "Delete an item of a conversation (answers with the conversation)",
        OPENAI,
        None,
        "Conversation",
    ),
    PublicRoute(
        "POST",
        "/v1/memory/records",
        "createMemoryRecords",
        "Write one memory record (`text`) or several (`records`) into a namespace (agent_id, user_id); sealed "
        "under the tenant's key (docs/memory.md)",
        OPENAI,
        "MemoryRecordsCreateRequest",
        "MemoryRecordOrList",
    ),
    PublicRoute(
        "GET",
        "/v1/memory/records",
        "listMemoryRecords",
        "A namespace's live records, newest first (cursor pages; `?agent_id=&user_id=`, `?filters=` a JSON "
        "metadata filter)",
        OPENAI,
        None,
        "ItemList",
    ),
    PublicRoute(
        "GET", "/v1/memory/records/{record_id}", "getMemoryRecord", "One memory record", OPENAI, None, "MemoryRecord"
    ),
    PublicRoute(
        "DELETE",
        "/v1/memory/records/{record_id}",
        "deleteMemoryRecord",
        "Delete a memory record (the row and every replica's index entry)",
        OPENAI,
        None,
        "Deleted",
    ),
    PublicRoute(
        "POST",
        "/v1/memory/search",
        "searchMemory",
        "Hybrid search (embeddings and BM25, rank-fused) of a namespace, with metadata filters and top_k",
        OPENAI,
        "MemorySearchRequest",
        "MemorySearchResults",
    ),
    PublicRoute(
        "GET",
        "/v1/memory/namespaces",
        "listMemoryNamespaces",
        "The tenant's memory namespaces with their live record counts and default TTLs, by agent and user, a "
        "page at a time (`?limit=` 1-1000, default 1000; `?after=` the `last_id` of the page before)",
        OPENAI,
        None,
        "MemoryNamespaceList",
    ),
    PublicRoute(
        "POST",
        "/v1/memory/namespaces",
        "updateMemoryNamespace",
        "Create a namespace or set its default TTL (for records written afterwards without one)",
        OPENAI,
        "MemoryNamespaceRequest",
        "MemoryNamespace",
    ),
    PublicRoute(
        "DELETE",
        "/v1/memory/namespaces",
        "deleteMemoryNamespace",
        "Delete a namespace (`?agent_id=&user_id=`) and all its records; tenant-admin",
        OPENAI,
        None,
        "MemoryDeleted",
    ),
    PublicRoute(
        "DELETE",
        "/v1/memory/users/{user_id}",
        "forgetMemoryUser",
        "Forget a user: delete every namespace of the user, whatever the agent, and all their records; tenant-admin",
        OPENAI,
        None,
        "MemoryDeleted",
    ),
    PublicRoute("GET", "/healthz", "health", "Liveness: the process answers", NONE, None, "Status"),
    PublicRoute(
        "GET", "/readyz", "ready", "Readiness: 200 once start-up is complete, 503 before", NONE, None, "Status"
    ),
    PublicRoute("GET", "/openapi.json", "publicOpenapi", "This document", NONE, None, None),
    PublicRoute(
        "GET",
        "/metrics",
        "metrics",
        "Prometheus metrics, when metrics.enabled; who may read them is metrics.access (loopback callers, an "
        "org-admin or auditor key, or anyone): docs/metrics.md",
        NONE,
        None,
        None,
    ),
    PublicRoute(
        "POST",
        "/chat/completions",
        "createChatCompletionWithoutV1",
        "Alias of POST /v1/chat/completions",
        OPENAI,
        "ChatCompletionRequest",
        "ChatCompletion",
        "ChatCompletionChunk",
        "/v1/chat/completions",
    ),
    PublicRoute(
        "POST",
        "/embeddings",
        "createEmbeddingWithoutV1",
        "Alias of POST /v1/embeddings",
        OPENAI,
        "EmbeddingsRequest",
        "EmbeddingsResponse",
        alias_of="/v1/embeddings",
    ),
    PublicRoute(
        "GET",
        "/models",
        "listModelsWithoutV1",
        "Alias of GET /v1/models",
        OPENAI,
        None,
        "ModelList",
        alias_of="/v1/models",
    ),
]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: Sequence[str] = (), extra: bool = True, **props: Schema) -> Schema:
    """An object schema. `extra`: unknown fields are allowed (OpenAI-compatible servers ignore or forward them)."""
    out: Schema = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    if not extra:
        out["additionalProperties"] = False
    return out


def _null(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _const(value: str) -> Schema:
    return {"type": "string", "enum": [value]}


def _enum(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


STR, INT, NUM, BOOL = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
JSON_OBJECT = {"type": "object", "additionalProperties": True}  # a JSON Schema or free-form object, passed on as is


def _openai_schemas() -> dict[str, Schema]:
    text_part = _obj(["type", "text"], type=_const("text"), text=STR)
    image_part = _obj(
        ["type", "image_url"],
        type=_const("image_url"),
        image_url=_obj(
            ["url"],
            url={
                "type": "string",
                "description": "An https:// URL or a data: URL. The gateway never fetches it: "
                "a provider that cannot take URLs gets a 400 naming the part.",
            },
            detail=_enum("auto", "low", "high"),
        ),
    )
    audio_part = _obj(
        ["type", "input_audio"],
        type=_const("input_audio"),
        input_audio=_obj(["data", "format"], data=STR, format=_enum("wav", "mp3")),
    )
    file_part = _obj(["type", "file"], type=_const("file"), file=_obj(filename=STR, file_data=STR, file_id=STR))
    refusal_part = _obj(["type", "refusal"], type=_const("refusal"), refusal=STR)

    def content(*parts: Schema) -> Schema:
        return {"oneOf": [STR, {"type": "array", "minItems": 1, "items": {"oneOf": list(parts)}}]}

    tool_call = _obj(
        ["id", "type", "function"],
        id=STR,
        type=_const("function"),
        function=_obj(["name", "arguments"], name=STR, arguments={"type": "string", "description": "JSON text"}),
    )
    messages = {
        "SystemMessage": _obj(["role", "content"], role=_const("system"), content=content(text_part), name=STR),
        "DeveloperMessage": _obj(["role", "content"], role=_const("developer"), content=content(text_part), name=STR),
        "UserMessage": _obj(
            ["role", "content"],
            role=_const("user"),
            content=content(text_part, image_part, audio_part, file_part),
            name=STR,
        ),
        "AssistantMessage": _obj(
            ["role"],
            role=_const("assistant"),
            content=_null(content(text_part, refusal_part)),
            refusal=_null(STR),
            name=STR,
            tool_calls={"type": "array", "items": tool_call},
        ),
        "ToolMessage": _obj(
            ["role", "content", "tool_call_id"], role=_const("tool"), content=content(text_part), tool_call_id=STR
        ),
        "FunctionMessage": _obj(["role", "content", "name"], role=_const("function"), content=_null(STR), name=STR),
    }
    chat_request = _obj(
        ["model", "messages"],
        model={"type": "string", "description": "A model group of this gateway (GET /v1/models)."},
        messages={
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_ITEMS,
            "items": {"oneOf": [_ref(n) for n in messages]},
        },
        stream=_null(BOOL),
        stream_options=_null(_obj(include_usage=BOOL, include_obfuscation=BOOL)),
        tools={
            "type": "array",
            "maxItems": MAX_TOOLS,
            "items": _obj(
                ["type", "function"],
                type=_const("function"),
                function=_obj(["name"], name=STR, description=STR, parameters=JSON_OBJECT, strict=_null(BOOL)),
            ),
        },
        tool_choice={
            "oneOf": [
                _enum("none", "auto", "required"),
                _obj(["type", "function"], type=_const("function"), function=_obj(["name"], name=STR)),
            ]
        },
        parallel_tool_calls=BOOL,
        response_format={
            "oneOf": [
                _obj(["type"], type=_const("text")),
                _obj(["type"], type=_const("json_object")),
                _obj(
                    ["type", "json_schema"],
                    type=_const("json_schema"),
                    json_schema=_obj(["name"], name=STR, description=STR, schema=JSON_OBJECT, strict=_null(BOOL)),
                ),
            ]
        },
        max_tokens=_null({"type": "integer", "minimum": 1}),
        max_completion_tokens=_null({"type": "integer", "minimum": 1}),
        n=_null({"type": "integer", "minimum": 1, "maximum": 128}),
        temperature=_null({"type": "number", "minimum": 0, "maximum": 2}),
        top_p=_null({"type": "number", "minimum": 0, "maximum": 1}),
        stop=_null({"oneOf": [STR, {"type": "array", "minItems": 1, "maxItems": 4, "items": STR}]}),
        seed=_null(INT),
        user=STR,
        multihome=_ref("MultihomeExtension"),
    )
    chat_request["description"] = (
        "OpenAI's chat request. Fields not listed are forwarded unchanged to OpenAI-"
        "compatible upstreams; translating upstreams map, drop (header "
        "x-multihome-dropped-params) or refuse them with a 400."
    )
    usage = _obj(
        ["prompt_tokens", "completion_tokens", "total_tokens"],
        prompt_tokens=INT,
        completion_tokens=INT,
        total_tokens=INT,
        prompt_tokens_details=_obj(cached_tokens=INT),
    )
    finish = _null(_enum("stop", "length", "tool_calls", "content_filter", "function_call"))
    completion = _obj(
        ["id", "object", "created", "model", "choices"],
        id=STR,
        object=_const("chat.completion"),
        created=INT,
        model=STR,
        choices={
            "type": "array",
            "items": _obj(
                ["index", "message", "finish_reason"],
                index=INT,
                finish_reason=finish,
                message=_obj(
                    ["role"],
                    role=_const("assistant"),
                    content=_null(STR),
                    refusal=_null(STR),
                    tool_calls={"type": "array", "items": tool_call},
                ),
            ),
        },
        usage=usage,
    )
    chunk = _obj(
        ["id", "object", "created", "model", "choices"],
        id=STR,
        object=_const("chat.completion.chunk"),
        created=INT,
        model=STR,
        usage=_null(usage),
        choices={
            "type": "array",
            "items": _obj(
                ["index", "delta"],
                index=INT,
                finish_reason=finish,
                delta=_obj(
                    role=STR,
                    content=_null(STR),
                    refusal=_null(STR),
                    tool_calls={
                        "type": "array",
                        "items": _obj(
                            ["index"],
                            index=INT,
                            id=STR,
                            type=_const("function"),
                            function=_obj(name=STR, arguments=STR),
                        ),
                    },
                ),
            ),
        },
    )
    chunk["description"] = "The data of one SSE event; the stream ends with `data: [DONE]`."
    embeddings_request = _obj(
        ["model", "input"],
        model=STR,
        input={
            "oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "minItems": 1, "maxItems": 2048, "items": {"type": "string", "minLength": 1}},
                {"type": "array", "minItems": 1, "maxItems": 2048, "items": INT},
                {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 2048,
                    "items": {"type": "array", "minItems": 1, "items": INT},
                },
            ]
        },
        encoding_format=_enum("float", "base64"),
        dimensions={"type": "integer", "minimum": 1},
        user=STR,
        multihome=_ref("MultihomeExtension"),
    )
    embeddings_response = _obj(
        ["object", "model", "data", "usage"],
        object=_const("list"),
        model=STR,
        data={
            "type": "array",
            "items": _obj(
                ["index", "object", "embedding"],
                index=INT,
                object=_const("embedding"),
                embedding={"oneOf": [{"type": "array", "items": NUM}, {"type": "string", "description": "base64"}]},
            ),
        },
        usage=_obj(["prompt_tokens", "total_tokens"], prompt_tokens=INT, total_tokens=INT),
    )
    model = _obj(["id", "object", "created", "owned_by"], id=STR, object=_const("model"), created=INT, owned_by=STR)
    return {
        **messages,
        "ChatCompletionRequest": chat_request,
        "ChatCompletion": completion,
        "ChatCompletionChunk": chunk,
        "EmbeddingsRequest": embeddings_request,
        "EmbeddingsResponse": embeddings_response,
        "Model": model,
        "ModelList": _obj(["object", "data"], object=_const("list"), data={"type": "array", "items": _ref("Model")}),
        "RouteExplainRequest": {
            "description": "A chat request, or an embeddings request (has `input`, no `messages`).",
            "anyOf": [_ref("ChatCompletionRequest"), _ref("EmbeddingsRequest")],
        },
        "RouteExplanation": _obj(
            ["object", "model", "plans", "would_attempt"],
            object=_const("route.explanation"),
            model=STR,
            fallback_groups={"type": "array", "items": STR},
            plans={"type": "array", "items": {"type": "object"}},
            breakers={"type": "object"},
            would_attempt={"type": "array", "items": STR},
            policy={"type": "object"},
            refused={
                **_obj(
                    ["status", "message", "type", "param", "code"],
                    status=INT,
                    message=STR,
                    type=STR,
                    param=_null(STR),
                    code=_null(STR),
                ),
                "description": "A read-only caller's: the error its own call would get (would_attempt is empty).",
            },
        ),
        "MultihomeExtension": _obj(
            extra=False,
            route=_obj(
                extra=False,
                deployments={
                    "type": "array",
                    "items": STR,
                    "description": "Only these deployments of the model group may serve the call (never others).",
                },
            ),
        ),
        "Error": _obj(
            ["error"],
            error=_obj(["message", "type", "param", "code"], message=STR, type=STR, param=_null(STR), code=_null(STR)),
        ),
        "Status": _obj(["status"], status=STR),
    }


def _responses_schemas() -> dict[str, Schema]:
    """The Responses and Conversations APIs as this gateway serves them (docs/responses.md): items are
    described loosely (their many shapes are OpenAI's), the fields it checks exactly."""
    part = _obj(["type"], type=_enum("input_text", "output_text", "input_image", "input_file", "refusal"), text=STR)
    item = _obj(
        type=_enum("message", "function_call", "function_call_output", "reasoning"),
        role=_enum("user", "assistant", "system", "developer"),
        content={"oneOf": [STR, {"type": "array", "items": part}]},
        call_id=STR,
        name=STR,
        arguments=STR,
        output={"oneOf": [STR, {"type": "array", "items": part}]},
    )
    metadata = {"type": "object", "maxProperties": 16, "additionalProperties": {"type": "string", "maxLength": 512}}
    create = _obj(
        ["model"],
        extra=False,
        model={"type": "string", "description": "A model group of this gateway (GET /v1/models)."},
        input={"oneOf": [STR, {"type": "array", "maxItems": MAX_ITEMS, "items": _ref("Item")}]},
        instructions=_null(STR),
        previous_response_id=_null(STR),
        conversation=_null({"oneOf": [STR, _obj(["id"], id=STR)]}),
        store=_null(BOOL),
        background=_null(
            {
                "type": "boolean",
                "description": "Answer `queued` at once and run the turn on a job worker (needs store).",
            }
        ),
        stream=_null(BOOL),
        stream_options=_null(_obj(include_obfuscation=BOOL)),
        tools={
            "type": "array",
            "maxItems": MAX_TOOLS_OTHER,
            "items": _obj(
                ["type", "name"],
                type=_const("function"),
                name=STR,
                description=_null(STR),
                parameters=_null(JSON_OBJECT),
                strict=_null(BOOL),
            ),
        },
        tool_choice={
            "oneOf": [_enum("none", "auto", "required"), _obj(["type", "name"], type=_const("function"), name=STR)]
        },
        parallel_tool_calls=_null(BOOL),
        max_output_tokens=_null({"type": "integer", "minimum": 16}),
        max_tool_calls=_null({"type": "integer", "minimum": 1}),
        temperature=_null({"type": "number", "minimum": 0, "maximum": 2}),
        top_p=_null({"type": "number", "minimum": 0, "maximum": 1}),
        top_logprobs=_null({"type": "integer", "minimum": 0, "maximum": 0}),
        text=_null(
            _obj(
                format=_obj(
                    ["type"],
                    type=_enum("text", "json_object", "json_schema"),
                    name=STR,
                    schema=JSON_OBJECT,
                    strict=_null(BOOL),
                    description=STR,
                ),
                verbosity=_null(_enum("low", "medium", "high")),
            )
        ),
        reasoning=_null(_obj(effort=_null(STR), summary=_null(STR))),
        metadata=_null(metadata),
        include=_null({"type": "array", "items": STR}),
        truncation=_null(_enum("auto", "disabled")),
        user=STR,
        safety_identifier=STR,
        prompt_cache_key=STR,
        prompt_cache_retention=_null(STR),
        service_tier=_null(STR),
        multihome=_ref("MultihomeExtension"),
    )
    create["description"] = "OpenAI's CreateResponse; a field not listed is a 400 naming it."
    response = _obj(
        ["id", "object", "created_at", "status", "model", "output"],
        id=STR,
        object=_const("response"),
        created_at=INT,
        status=_enum("completed", "failed", "in_progress", "cancelled", "queued", "incomplete"),
        model=STR,
        output={"type": "array", "items": JSON_OBJECT},
        usage=_null(JSON_OBJECT),
        previous_response_id=_null(STR),
        conversation=_null(_obj(["id"], id=STR)),
    )
    event = _obj(["type", "sequence_number"], type=STR, sequence_number=INT)
    event["description"] = "The data of one SSE event (its `event:` line names the same type); no [DONE] follows."
    counted = {
        **create,
        "description": "A create's body (ResponseCreateRequest), parsed and checked as a create's; what only "
        "shapes the answer (stream, store, background, output limits) changes nothing here.",
    }
    return {
        "Item": item,
        "ResponseCreateRequest": create,
        "ResponseInputTokensRequest": counted,
        "ResponseInputTokens": _obj(
            ["object", "input_tokens"], object=_const("response.input_tokens"), input_tokens=INT
        ),
        "Response": response,
        "ResponseStreamEvent": event,
        "Deleted": _obj(["id", "object", "deleted"], id=STR, object=STR, deleted=BOOL),
        "ItemList": _obj(
            ["object", "data", "has_more"],
            object=_const("list"),
            data={"type": "array", "items": JSON_OBJECT},
            first_id=_null(STR),
            last_id=_null(STR),
            has_more=BOOL,
        ),
        "Conversation": _obj(
            ["id", "object", "created_at", "metadata"],
            id=STR,
            object=_const("conversation"),
            created_at=INT,
            metadata=metadata,
        ),
        "ConversationCreateRequest": _obj(
            extra=False, items=_null({"type": "array", "maxItems": 20, "items": _ref("Item")}), metadata=_null(metadata)
        ),
        "ConversationUpdateRequest": _obj(["metadata"], extra=False, metadata=metadata),
        "ConversationItemsRequest": _obj(
            ["items"], extra=False, items={"type": "array", "maxItems": 20, "items": _ref("Item")}
        ),
    }


def _memory_schemas() -> dict[str, Schema]:
    scalar = {"oneOf": [{"type": "string", "maxLength": 512}, NUM, BOOL]}
    metadata = {"type": "object", "maxProperties": 16, "additionalProperties": scalar}
    ttl = _null({"type": "integer", "minimum": 1, "maximum": 315_360_000})
    ns_id = {"type": "string", "maxLength": 200, "description": "empty: none"}
    text = {"type": "string", "minLength": 1, "maxLength": 32_768}
    record = _obj(
        ["id", "object", "agent_id", "user_id", "text", "metadata", "created_at", "expires_at"],
        id=STR,
        object=_const("memory.record"),
        agent_id=STR,
        user_id=STR,
        text=STR,
        metadata=metadata,
        created_at=INT,
        expires_at=_null(INT),
    )
    namespace = _obj(
        ["object", "agent_id", "user_id", "records", "default_ttl_seconds", "created_at", "updated_at"],
        object=_const("memory.namespace"),
        agent_id=STR,
        user_id=STR,
        records=INT,
        default_ttl_seconds=_null(INT),
        created_at=INT,
        updated_at=INT,
    )
    return {
        "MemoryRecord": record,
        "MemoryRecordOrList": {"oneOf": [_ref("MemoryRecord"), _ref("ItemList")]},
        "MemoryRecordsCreateRequest": _obj(
            extra=False,
            agent_id=ns_id,
            user_id=ns_id,
            text=text,
            metadata=metadata,
            ttl_seconds=ttl,
            records={
                "type": "array",
                "minItems": 1,
                "maxItems": 100,
                "items": _obj(["text"], extra=False, text=text, metadata=metadata, ttl_seconds=ttl),
            },
        ),
        "MemorySearchRequest": _obj(
            ["query"],
            extra=False,
            query={"type": "string", "minLength": 1, "maxLength": 10_000},
            agent_id=ns_id,
            user_id=ns_id,
            top_k={"type": "integer", "minimum": 1, "maximum": 100},
            filters={
                **JSON_OBJECT,
                "description": "Mem0-style: {key: value | {eq|ne|in|nin|gt|gte|lt|lte: v}}, AND/OR/NOT",
            },
            mode=_enum("hybrid", "vector", "keyword"),
        ),
        "MemorySearchResults": _obj(
            ["object", "data"],
            object=_const("list"),
            mode=STR,
            data={"type": "array", "items": {"allOf": [record, _obj(["score"], score=NUM, similarity=NUM)]}},
        ),
        "MemoryNamespace": namespace,
        "MemoryNamespaceList": _obj(
            ["object", "data", "has_more"],
            object=_const("list"),
            data={"type": "array", "items": namespace},
            has_more=BOOL,
            last_id={
                **_null(STR),
                "description": "the `after` of the next page (a cursor naming the last namespace's agent and user)",
            },
        ),
        "MemoryNamespaceRequest": _obj(extra=False, agent_id=ns_id, user_id=ns_id, default_ttl_seconds=ttl),
        "MemoryDeleted": _obj(["object", "deleted"], object=STR, deleted=BOOL, records_deleted=INT),
    }


class _MessagesFields(TypedDict):
    """The fields a Messages request and a count_tokens request share (typed, so `**` spreads them
    into `_obj` as properties and never as its `required`/`extra` parameters)."""

    model: Schema
    messages: Schema
    system: Schema
    tools: Schema
    tool_choice: Schema
    thinking: Schema


def _anthropic_schemas() -> dict[str, Schema]:
    text = _obj(["type", "text"], type=_const("text"), text=STR, cache_control=JSON_OBJECT)
    image = _obj(
        ["type", "source"],
        type=_const("image"),
        cache_control=JSON_OBJECT,
        source={
            "oneOf": [
                _obj(
                    ["type", "media_type", "data"],
                    type=_const("base64"),
                    media_type=_enum("image/jpeg", "image/png", "image/gif", "image/webp"),
                    data=STR,
                ),
                _obj(
                    ["type", "url"],
                    type=_const("url"),
                    url={
                        "type": "string",
                        "description": "Passed to the upstream as a URL; the gateway never fetches it.",
                    },
                ),
            ]
        },
    )
    tool_use = _obj(
        ["type", "id", "name", "input"],
        type=_const("tool_use"),
        id=STR,
        name=STR,
        input=JSON_OBJECT,
        cache_control=JSON_OBJECT,
    )
    tool_result = _obj(
        ["type", "tool_use_id"],
        type=_const("tool_result"),
        tool_use_id=STR,
        is_error=BOOL,
        content={"oneOf": [STR, {"type": "array", "items": text}]},
        cache_control=JSON_OBJECT,
    )
    thinking = _obj(["type"], type=_enum("thinking", "redacted_thinking"))
    message = _obj(
        ["role", "content"],
        role=_enum("user", "assistant"),
        content={"oneOf": [STR, {"type": "array", "items": {"oneOf": [text, image, tool_use, tool_result, thinking]}}]},
    )
    common = _MessagesFields(
        model={"type": "string", "description": "A model group of this gateway."},
        messages={"type": "array", "minItems": 1, "maxItems": MAX_ITEMS, "items": message},
        system={"oneOf": [STR, {"type": "array", "items": text}]},
        tools={
            "type": "array",
            "maxItems": MAX_TOOLS_OTHER,
            "items": _obj(
                ["name", "input_schema"],
                name=STR,
                description=STR,
                input_schema=JSON_OBJECT,
                type=_const("custom"),
                cache_control=JSON_OBJECT,
            ),
        },
        tool_choice=_obj(["type"], type=_enum("auto", "any", "tool", "none"), name=STR, disable_parallel_tool_use=BOOL),
        thinking=_obj(["type"], type=_enum("enabled", "disabled"), budget_tokens=INT),
    )
    request = _obj(
        ["model", "messages", "max_tokens"],
        **common,
        max_tokens={"type": "integer", "minimum": 1},
        stop_sequences={
            "type": "array",
            "maxItems": 4,
            "items": STR,
            "description": "At most four on this gateway (OpenAI's limit applies to every upstream).",
        },
        temperature={"type": "number", "minimum": 0, "maximum": 1},
        top_p={"type": "number", "minimum": 0, "maximum": 1},
        top_k={"type": "integer", "minimum": 0, "description": "Accepted and dropped (x-multihome-dropped-params)."},
        stream=BOOL,
        metadata=_obj(user_id=_null(STR)),
        service_tier=STR,
        output_config=_obj(format=_obj(["type", "schema"], type=_const("json_schema"), schema=JSON_OBJECT), effort=STR),
        multihome=_ref("MultihomeExtension"),
    )
    usage = _obj(
        ["input_tokens", "output_tokens"],
        input_tokens=INT,
        output_tokens=INT,
        cache_creation_input_tokens=_null(INT),
        cache_read_input_tokens=_null(INT),
    )
    response = _obj(
        ["id", "type", "role", "model", "content", "stop_reason", "usage"],
        id=STR,
        type=_const("message"),
        role=_const("assistant"),
        model=STR,
        content={
            "type": "array",
            "items": {
                "oneOf": [
                    _obj(["type", "text"], type=_const("text"), text=STR),
                    _obj(["type", "id", "name", "input"], type=_const("tool_use"), id=STR, name=STR, input=JSON_OBJECT),
                ]
            },
        },
        stop_reason=_null(
            _enum(
                "end_turn",
                "max_tokens",
                "stop_sequence",
                "tool_use",
                "pause_turn",
                "refusal",
                "model_context_window_exceeded",
            )
        ),
        stop_sequence=_null(STR),
        usage=usage,
    )
    event = _obj(
        ["type"],
        type=_enum(
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
            "ping",
            "error",
        ),
    )
    event["description"] = "The data of one named SSE event (`event: <type>`), in Anthropic's documented order."
    return {
        "MessagesRequest": request,
        "CountTokensRequest": _obj(["model", "messages"], **common),
        "TokenCount": _obj(["input_tokens"], input_tokens=INT),
        "Message": response,
        "MessageStreamEvent": event,
        "AnthropicError": _obj(
            ["type", "error"],
            type=_const("error"),
            request_id=STR,
            error=_obj(["type", "message"], type=STR, message=STR),
        ),
    }


_RESPONSE_HEADERS = {
    "x-request-id": {
        "description": "This call's id in the gateway's logs, audit trail and usage records.",
        "schema": STR,
    },
    "x-multihome-deployment": {"description": "The deployment that served the call.", "schema": STR},
    "x-multihome-attempts": {"description": "Every attempt of the call: deployment;outcome=...;ms=...", "schema": STR},
    "x-multihome-dropped-params": {
        "description": "Request fields the serving provider cannot honour and the gateway dropped.",
        "schema": STR,
    },
}
_NARROWING = {
    "name": "x-multihome-deployments",
    "in": "header",
    "required": False,
    "schema": STR,
    "description": "Comma-separated deployments of the model group this call may use (never others).",
}


_PATH_PARAM = re.compile(r"\{(\w+)\}")
_ROUTED = frozenset({"ChatCompletionRequest", "EmbeddingsRequest", "RouteExplainRequest", "MessagesRequest"})
_ROUTED |= {"ResponseCreateRequest"}
_LIST_QUERY: list[Schema] = [
    {"name": "after", "in": "query", "required": False, "schema": STR, "description": "An item id: the page after it"},
    {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
    {"name": "order", "in": "query", "required": False, "schema": _enum("asc", "desc")},
]


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


# OpenAI's Includable values (schema/responses.py INCLUDABLE); a read takes them as `include` or `include[]`.
_INCLUDE = _query(
    "include",
    {"type": "array", "items": _enum(*sorted(INCLUDABLE))},
    "OpenAI's include values; another is a 400 naming it (the SDKs write `include[]=`, also read)",
)
_NAMESPACE = [
    _query("agent_id", STR, 'The namespace\'s agent (default "")'),
    _query("user_id", STR, 'The namespace\'s user (default "")'),
]
_TENANT = _query("tenant", STR, "An org-admin key names the tenant whose memory it reads or writes")
# The query parameters each operation reads besides the list cursor's (`_LIST_QUERY`).
_EXTRA_QUERY: dict[str, list[Schema]] = {
    "explainRoute": [_query("work", _enum(*WORK_KINDS), "Explain the plan of this kind of stateful work")],
    "getResponse": [
        _INCLUDE,
        _query("stream", BOOL, "Stream a background response created with `stream: true` again"),
        _query("starting_after", {"type": "integer", "minimum": -1}, "With `stream`: the events after this one"),
        _query("include_obfuscation", BOOL, "Accepted; this gateway adds no obfuscation to stream events"),
    ],
    "listInputItems": [_INCLUDE, _query("before", STR, "An item id: the page that ends just before it")],
    "listConversationItems": [_INCLUDE],
    "createConversationItems": [_INCLUDE],
    "getConversationItem": [_INCLUDE],
    "createMemoryRecords": [_TENANT],
    "listMemoryRecords": [*_NAMESPACE, _query("filters", STR, "A metadata filter as JSON (docs/memory.md)"), _TENANT],
    "getMemoryRecord": [_TENANT],
    "deleteMemoryRecord": [_TENANT],
    "searchMemory": [_TENANT],
    "listMemoryNamespaces": [
        _query("agent_id", STR, "Only this agent's namespaces"),
        _query("user_id", STR, "Only this user's namespaces"),
        _query("after", STR, "The `last_id` of the page before (a cursor): the namespaces after it"),
        _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Namespaces of the page (default 1000)"),
        _TENANT,
    ],
    "updateMemoryNamespace": [_TENANT],
    "deleteMemoryNamespace": [*_NAMESPACE, _TENANT],
    "forgetMemoryUser": [_TENANT],
}


def _error(door: str) -> Schema:
    schema = "AnthropicError" if door == ANTHROPIC else "Error"
    return {
        "description": f"{'Anthropic' if door == ANTHROPIC else 'OpenAI'} error envelope",
        "content": {"application/json": {"schema": _ref(schema)}},
    }


def _operation(route: PublicRoute) -> Schema:
    op: Schema = {"operationId": route.operation_id, "summary": route.summary}
    if route.door == OPENAI:
        op["security"] = [{"bearer": []}]
    elif route.door == ANTHROPIC:
        op["security"] = [{"apiKey": []}, {"bearer": []}]
    else:
        op["security"] = []
    params = [{"name": name, "in": "path", "required": True, "schema": STR} for name in _PATH_PARAM.findall(route.path)]
    if route.response == "ItemList" and route.method == "GET":
        params += _LIST_QUERY
    params += _EXTRA_QUERY.get(route.operation_id, [])
    if route.request is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(route.request)}}}
        if route.door != NONE and route.request in _ROUTED:
            params.append(_NARROWING)
    if params or route.request is not None:
        op["parameters"] = params
    ok: Schema = {"description": "OK"}
    if route.response is not None:
        ok["content"] = {"application/json": {"schema": _ref(route.response)}}
        if route.stream is not None:
            ok["content"]["text/event-stream"] = {"schema": _ref(route.stream)}
            ok["headers"] = _RESPONSE_HEADERS
    elif route.operation_id == "publicOpenapi":
        ok["content"] = {"application/json": {"schema": {"type": "object"}}}
    elif route.operation_id == "metrics":
        ok["content"] = {"text/plain": {"schema": STR}, "application/openmetrics-text": {"schema": STR}}
    responses: dict[str, Schema] = {"200": ok}
    if route.path == "/readyz":
        responses["503"] = {
            "description": "Still starting",
            "content": {"application/json": {"schema": _ref("Status")}},
        }
    if route.door != NONE:
        responses["4XX"] = _error(route.door)
        responses["5XX"] = {
            **_error(route.door),
            "description": "Every deployment failed or the time budget ran out (the message lists the attempts)",
        }
    op["responses"] = responses
    return op


def openapi_document() -> Schema:
    paths: dict[str, dict[str, Schema]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Multihome gateway: OpenAI- and Anthropic-compatible API",
            "version": "1",
            "description": "What this gateway accepts and returns on its client-facing doors. `model` names a model "
            "group of the gateway's config. The admin API has its own document at "
            "/admin/v1/openapi.json.",
        },
        "components": {
            "schemas": {**_openai_schemas(), **_responses_schemas(), **_memory_schemas(), **_anthropic_schemas()},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A key issued by this gateway or an OIDC token from a configured issuer.",
                },
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": "The same credential, as the anthropic SDK sends it.",
                },
            },
        },
        "paths": paths,
    }
