"""OpenAI Responses API request (`POST /v1/responses`) and Conversations bodies, decoded once into
typed structs and checked.

One flat struct covers every input item type and one every content part, so an unsupported type
gets a sentence naming it (a tagged union would only say "invalid tag"). Unlike the chat door,
which forwards fields it does not model to OpenAI-compatible upstreams, this door translates every
request, so a field it does not know is a 400 naming it: nothing a client asked for is silently lost.
Protocol facts: /work/shared/reference/responses.md; what is supported: docs/responses.md.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from .bounds import MAX_METADATA, MAX_TOOLS_OTHER, check_metadata, check_safety_identifier, count, too_many
from .chat import REASONING_EFFORTS
from .decoding import COUNT_ITEMS_OVER, Counted, count_body, count_items, decode_body, decode_views, top_level
from .errors import bad_request, echo
from .tiers import SERVICE_TIERS
from .tool_names import MAX_RESPONSES_NAME, check_function_name

# OpenAI fields this gateway does not serve yet: a 400 that says so, rather than "unrecognized".
UNSUPPORTED_FIELDS = frozenset(
    {
        "prompt",
        "context_management",
        "moderation",
        "prompt_cache_options",
        "background_options",
        "access_programs",
        "image",
    }
)
INCLUDABLE = frozenset(
    {
        "file_search_call.results",
        "web_search_call.results",
        "web_search_call.action.sources",
        "message.input_image.image_url",
        "computer_call_output.output.image_url",
        "code_interpreter_call.outputs",
        "reasoning.encrypted_content",
        "message.output_text.logprobs",
    }
)
TOOL_CHOICES = frozenset({"none", "auto", "required"})
CACHE_RETENTIONS = frozenset({"in_memory", "in-memory", "24h"})  # "in-memory": the schema's spelling until 2026
FORMATS = frozenset({"text", "json_object", "json_schema"})
MAX_CONVERSATION_ITEMS = 20  # per create call, as OpenAI
MAX_ITEM_ID = 200  # OpenAI's own ids run to ~60 characters; clients replay them
MIN_OUTPUT_TOKENS = 16  # OpenAI's published minimum of `max_output_tokens` (its 400 below it)


class Part(msgspec.Struct, omit_defaults=True):
    """Any content part: input_text, output_text, input_image, input_file, refusal, summary_text..."""

    type: str
    text: str | None = None
    image_url: str | None = None
    file_id: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None
    detail: str | None = None
    refusal: str | None = None


class InputItem(msgspec.Struct, omit_defaults=True):
    """Any input item: message (type optional), function_call, function_call_output, reasoning..."""

    type: str | None = None
    role: str | None = None
    content: str | list[Part] | None = None
    id: str | None = None
    status: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[Part] | None = None
    summary: list[Part] | None = None
    encrypted_content: str | None = None
    # MCP items (mcp_list_tools, mcp_call, mcp_approval_request, mcp_approval_response: docs/agents.md)
    server_label: str | None = None
    tools: list[dict[str, Any]] | None = None
    error: Any = None
    approval_request_id: str | None = None
    approve: bool | None = None
    reason: str | None = None


class FunctionTool(msgspec.Struct):
    """A `function` tool, an `mcp` tool (its fields below; checked by tools/resolver.py), or a
    `memory` tool (Multihome's own; checked by state/memory/tools.py, docs/memory.md)."""

    type: str
    name: str | None = None
    description: str | None = None
    parameters: msgspec.Raw = msgspec.Raw()  # empty when absent (Raw cannot sit in a union)
    strict: bool | None = None
    server_label: str | None = None
    server_url: str | None = None
    server_description: str | None = None
    allowed_tools: Any = None
    require_approval: Any = None
    headers: Any = None  # credentials: never echoed, never logged
    authorization: str | None = None
    connector_id: str | None = None
    tunnel_id: str | None = None
    agent_id: Any = None  # memory
    user_id: Any = None
    top_k: Any = None
    ttl_seconds: Any = None

    def memory_spec(self) -> dict[str, Any]:
        """The `memory` tool as state/memory/tools.py reads it (the fields that were given)."""
        names = ("agent_id", "user_id", "allowed_tools", "top_k", "ttl_seconds")
        return {"type": "memory", **{n: getattr(self, n) for n in names if getattr(self, n) is not None}}

    def mcp_spec(self) -> dict[str, Any]:
        """The `mcp` tool as the resolver reads it (the fields that were given)."""
        names = ("server_label", "server_url", "server_description", "allowed_tools", "require_approval")
        spec = {n: getattr(self, n) for n in (*names, "headers", "authorization", "connector_id", "tunnel_id")}
        return {"type": "mcp", **{k: v for k, v in spec.items() if v is not None}}


class NamedToolChoice(msgspec.Struct):
    type: str
    name: str | None = None


class TextFormat(msgspec.Struct):
    type: str
    name: str | None = None
    description: str | None = None
    schema: msgspec.Raw = msgspec.Raw()
    strict: bool | None = None


class TextConfig(msgspec.Struct):
    format: TextFormat | None = None
    verbosity: str | None = None


class ConversationRef(msgspec.Struct):
    id: str


class StreamOptions(msgspec.Struct):
    include_obfuscation: bool | None = None


class Reasoning(msgspec.Struct):
    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None
    context: str | None = None  # OpenAI's: passed on natively, not sent on the chat path (x-multihome-dropped-params)
    mode: str | None = None


class CreateResponse(msgspec.Struct):
    model: str
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    conversation: str | ConversationRef | None = None
    store: bool | None = None
    background: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: str | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_logprobs: int | None = None
    text: TextConfig | None = None
    reasoning: Reasoning | None = None
    metadata: dict[str, str] | None = None
    include: list[str] | None = None
    truncation: str | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    service_tier: str | None = None
    multihome: msgspec.Raw = msgspec.Raw()  # the gateway's routing extension, passed to the canonical request

    @property
    def conversation_id(self) -> str | None:
        conv = self.conversation
        return conv.id if isinstance(conv, ConversationRef) else conv


KNOWN_FIELDS = frozenset(CreateResponse.__struct_fields__)
# An item's arrays the checks, storage and translation walk part by part (an mcp_list_tools item's `tools`).
_PARTS = ("content", "output", "summary", "tools")
_NOUN = "content, output and summary parts and listed tools"
# 16 pairs of at most 64 and 512 characters, each escaped (\uXXXX) and quoted: under 56 KiB of JSON.
_METADATA_BYTES = 64 * 1024
_METADATA = (
    "metadata",
    _METADATA_BYTES,
    f"'metadata' holds at most {MAX_METADATA} pairs, keys of at most 64 characters and values of at most 512.",
)
# The fields decoded whole, of any shape (`Any`), held to a size (docs/hostile-input.md): an MCP server's tool
# listing sent back may be large (its tools' schemas), the rest are a few names, headers or an error.
_ANY = 64 * 1024
_ITEM_SIZED = (("error", _ANY), ("tools", 1024 * 1024))
_TOOL_SIZED = tuple(
    (name, _ANY)
    for name in ("allowed_tools", "require_approval", "headers", "agent_id", "user_id", "top_k", "ttl_seconds")
)
_create = count_items(
    msgspec.json.Decoder(CreateResponse),
    Counted(
        "input",
        _PARTS,
        max_tools=MAX_TOOLS_OTHER,
        noun=_NOUN,
        sized=(_METADATA,),
        item_sized=_ITEM_SIZED,
        tool_sized=_TOOL_SIZED,
    ),
)


def parse_create(body: bytes) -> CreateResponse:
    raw, req = decode_views(body, _create)
    for name in raw:
        if name in UNSUPPORTED_FIELDS:
            raise bad_request(
                f"'{name}' is not supported by this gateway yet (docs/responses.md).",
                param=name,
                code="unsupported_parameter",
            )
        if name not in KNOWN_FIELDS:
            raise bad_request(
                f"Unrecognized request argument supplied: {echo(name)}", param=echo(name), code="unknown_parameter"
            )
    _validate(req)
    for name in _NESTED.keys() & raw.keys():
        _check_nested(name, raw[name])
    if req.tools and any(t.type == "memory" for t in req.tools):
        _check_memory_fields(raw["tools"])
    return req


# The fields of the request's objects this gateway models (the struct decoding them would skip any
# other): a field beside them is refused like an unknown top-level one, never silently dropped.
_KEYS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_NESTED: dict[str, frozenset[str]] = {
    "text": frozenset(TextConfig.__struct_fields__),
    "text.format": frozenset(TextFormat.__struct_fields__),
    "reasoning": frozenset(Reasoning.__struct_fields__),
    "stream_options": frozenset(StreamOptions.__struct_fields__),
    "conversation": frozenset(ConversationRef.__struct_fields__),
}


def _check_nested(name: str, raw: msgspec.Raw) -> None:
    if memoryview(raw)[:1].tobytes() != b"{":
        return  # a string conversation id, or null: the typed decode has checked it
    fields = decode_body(raw, _KEYS)  # the keys only: the values were decoded (or skipped) already
    for key in fields:
        if key not in _NESTED[name]:
            param = f"{name}.{echo(key)}"
            raise bad_request(f"Unrecognized request argument supplied: {param}", param=param, code="unknown_parameter")
    if name == "text" and "format" in fields:
        _check_nested("text.format", fields["format"])


# A `memory` tool's fields: any other is refused (a misspelt `user_id` must not write to the shared namespace).
MEMORY_FIELDS = frozenset({"type", "agent_id", "user_id", "allowed_tools", "top_k", "ttl_seconds"})
# Tools the gateway runs itself (the agent loop, api/responses/agent.py), rather than the client.
SERVER_TOOLS = frozenset({"mcp", "memory"})
MEMORY_LABEL = "memory"  # reserved for the memory tools' `mcp_call` items
MEMORY_TOOLS = frozenset({"memory_search", "memory_write"})  # the functions it offers (state/memory/tools.py)


def runs_tools(req: CreateResponse) -> bool:
    """Whether the gateway runs this request's loop (it has `mcp` or `memory` tools)."""
    return bool(req.tools) and any(t.type in SERVER_TOOLS for t in req.tools or ())


def _check_memory_fields(raw: msgspec.Raw) -> None:
    for i, tool in enumerate(msgspec.json.decode(raw)):
        if tool.get("type") == "memory":
            unknown = sorted(set(tool) - MEMORY_FIELDS)
            if unknown:
                raise bad_request(
                    f"tools[{i}] is a memory tool with unknown field '{echo(unknown[0])}' (it takes: "
                    f"{', '.join(sorted(MEMORY_FIELDS))}).",
                    param=f"tools[{i}].{echo(unknown[0])}",
                )


def _validate(req: CreateResponse) -> None:
    if not req.model:
        raise bad_request("'model' must be a non-empty string naming a model (see GET /v1/models).", param="model")
    if req.previous_response_id is not None and req.conversation is not None:
        raise bad_request(
            "'previous_response_id' and 'conversation' cannot be used together: a response continues one or the other.",
            param="conversation",
        )
    if req.input is None and req.previous_response_id is None and req.conversation is None:
        raise bad_request("'input' is required: a string, or a list of input items.", param="input")
    if isinstance(req.input, list):
        for i, item in enumerate(req.input):
            check_item(item, f"input[{i}]")
    if req.background and req.store is False:
        raise bad_request(
            "Background mode needs the response to be stored: 'background': true requires 'store': true.",
            param="background",
        )
    if req.stream_options is not None and not req.stream:
        raise bad_request("'stream_options' is only allowed when 'stream' is true.", param="stream_options")
    _check_tools(req)
    if req.temperature is not None and not 0 <= req.temperature <= 2:
        raise bad_request("'temperature' must be between 0 and 2.", param="temperature")
    if req.top_p is not None and not 0 <= req.top_p <= 1:
        raise bad_request("'top_p' must be between 0 and 1.", param="top_p")
    # An upper bound too: a 70-bit integer is refused by every provider. OpenAI's minimum output is 16 tokens.
    count(req.max_output_tokens, "max_output_tokens", MIN_OUTPUT_TOKENS)
    count(req.max_tool_calls, "max_tool_calls")
    if req.top_logprobs:
        raise bad_request(
            "'top_logprobs' is not supported by this gateway yet.", param="top_logprobs", code="unsupported_parameter"
        )
    if req.truncation is not None and req.truncation not in ("auto", "disabled"):
        raise bad_request("'truncation' must be 'auto' or 'disabled'.", param="truncation")
    # Echoed in the Response (or sent to a native upstream): OpenAI's enums, else a Response the SDK refuses.
    if req.service_tier is not None and req.service_tier not in SERVICE_TIERS:
        raise bad_request(f"'service_tier' must be one of: {', '.join(SERVICE_TIERS)}.", param="service_tier")
    if req.prompt_cache_retention is not None and req.prompt_cache_retention not in CACHE_RETENTIONS:
        raise bad_request("'prompt_cache_retention' must be 'in_memory' or '24h'.", param="prompt_cache_retention")
    for i, name in enumerate(req.include or ()):
        if name not in INCLUDABLE:
            raise bad_request(
                f"include[{i}] '{echo(name)}' is not one of: {', '.join(sorted(INCLUDABLE))}.", param=f"include[{i}]"
            )
    check_metadata(req.metadata)
    check_safety_identifier(req.safety_identifier)
    fmt = req.text.format if req.text is not None else None
    if fmt is not None:
        if fmt.type not in FORMATS:
            raise bad_request(
                f"text.format.type '{echo(fmt.type)}' is not one of: text, json_object, json_schema.",
                param="text.format.type",
            )
        if fmt.type == "json_schema" and (not fmt.name or not fmt.schema or fmt.schema == b"null"):
            raise bad_request(
                "text.format of type 'json_schema' needs 'name' and 'schema'.", param="text.format.schema"
            )
        if fmt.type == "json_schema":
            _check_schema_format(fmt)
    _check_reasoning(req.reasoning)
    if req.text is not None and req.text.verbosity not in (None, "low", "medium", "high"):
        raise bad_request("text.verbosity must be 'low', 'medium' or 'high'.", param="text.verbosity")
    conv = req.conversation_id
    if conv is not None and not (conv and conv.isprintable()):
        raise bad_request("'conversation' must name a conversation id.", param="conversation")
    prev = req.previous_response_id
    if prev is not None and not (prev and prev.isprintable()):  # no id issued has a control character
        raise bad_request("'previous_response_id' must name a response id.", param="previous_response_id")


def _check_reasoning(reasoning: Reasoning | None) -> None:
    """OpenAI's enums, named as the Responses request names them (not as the chat call it may become)."""
    if reasoning is None:
        return
    if reasoning.effort is not None and reasoning.effort not in REASONING_EFFORTS:
        allowed = ", ".join(REASONING_EFFORTS)
        raise bad_request(f"'reasoning.effort' must be one of: {allowed}.", param="reasoning.effort")
    if reasoning.context not in (None, "auto", "current_turn", "all_turns"):
        raise bad_request(
            "'reasoning.context' must be one of: auto, current_turn, all_turns.", param="reasoning.context"
        )
    for name in ("summary", "generate_summary"):
        # "none" is not OpenAI's, but asks for no summary plainly enough to be taken as that.
        if getattr(reasoning, name) not in (None, "auto", "concise", "detailed", "none"):
            raise bad_request(f"'reasoning.{name}' must be one of: auto, concise, detailed.", param=f"reasoning.{name}")


_FORMAT_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def _check_schema_format(fmt: TextFormat) -> None:
    """OpenAI's rules for a json_schema format: every provider is sent the name, and a schema that is
    not an object is refused by each in its own words (or, worse, ignored)."""
    assert fmt.name is not None
    if not _FORMAT_NAME.fullmatch(fmt.name):
        raise bad_request(
            "text.format.name must be 1 to 64 characters of a-z, A-Z, 0-9, underscores and dashes.",
            param="text.format.name",
        )
    if bytes(fmt.schema)[:1] != b"{":
        raise bad_request("text.format.schema must be a JSON Schema object.", param="text.format.schema")


def _check_tools(req: CreateResponse) -> None:
    if req.tools is not None and len(req.tools) > MAX_TOOLS_OTHER:
        raise too_many("tools", len(req.tools), MAX_TOOLS_OTHER)
    memory = [i for i, t in enumerate(req.tools or ()) if t.type == "memory"]
    if len(memory) > 1:
        raise bad_request("A request takes at most one memory tool.", param=f"tools[{memory[1]}]")
    labels: set[str] = set()
    for i, tool in enumerate(req.tools or ()):
        if tool.type == "mcp":
            if not tool.server_label:
                raise bad_request(
                    f"tools[{i}] is an mcp tool without 'server_label'.", param=f"tools[{i}].server_label"
                )
            if tool.server_label in labels:
                # The label names the server in every mcp_* item and function name: two would be ambiguous.
                raise bad_request(
                    f"tools[{i}]: the server_label '{echo(tool.server_label)}' is used by another mcp tool of this "
                    "request; each mcp tool needs a server_label of its own.",
                    param=f"tools[{i}].server_label",
                    code="duplicate_server_label",
                )
            labels.add(tool.server_label)
            if tool.server_label == MEMORY_LABEL:
                raise bad_request(
                    f"tools[{i}]: the server_label '{MEMORY_LABEL}' is reserved for the built-in memory tools "
                    "(docs/memory.md); give this MCP server another label.",
                    param=f"tools[{i}].server_label",
                )
            continue
        if tool.type == "memory":
            continue
        if tool.type != "function":
            raise bad_request(
                f"tools[{i}] has type '{echo(tool.type)}': this gateway serves function, mcp and memory tools only "
                "(docs/responses.md).",
                param=f"tools[{i}].type",
                code="unsupported_tool",
            )
        if tool.name is None:
            raise bad_request(f"tools[{i}] is a function tool without 'name'.", param=f"tools[{i}].name")
        check_function_name(tool.name, f"tools[{i}].name", MAX_RESPONSES_NAME)
        if tool.parameters and bytes(tool.parameters)[:1] not in (b"{", b"n"):  # an object, or null
            raise bad_request(f"tools[{i}].parameters must be a JSON Schema object.", param=f"tools[{i}].parameters")
    choice = req.tool_choice
    if isinstance(choice, str) and choice not in TOOL_CHOICES:
        raise bad_request("'tool_choice' must be 'none', 'auto', 'required' or a named function.", param="tool_choice")
    if isinstance(choice, NamedToolChoice):
        if choice.type != "function":
            raise bad_request(
                f"tool_choice of type '{echo(choice.type)}' is not supported by this gateway yet: use 'none', 'auto', "
                "'required' or {'type': 'function', 'name': ...}.",
                param="tool_choice",
                code="unsupported_parameter",
            )
        if not choice.name:
            raise bad_request("tool_choice of type 'function' needs 'name'.", param="tool_choice.name")
        if choice.name not in {t.name for t in req.tools or () if t.type == "function"}:
            if choice.name in MEMORY_TOOLS and any(t.type == "memory" for t in req.tools or ()):
                raise bad_request(  # forced, it would be forced again at every step of the run's loop
                    f"tool_choice cannot name the memory tool '{choice.name}': the model chooses when to search "
                    "or write (docs/memory.md).",
                    param="tool_choice.name",
                )
            raise bad_request(
                f"tool_choice names '{echo(choice.name)}', which is not in 'tools'.", param="tool_choice.name"
            )
    if choice is not None and choice != "none" and not req.tools:
        raise bad_request("'tool_choice' is only allowed when 'tools' are specified.", param="tool_choice")


_ROLES = frozenset({"user", "assistant", "system", "developer"})
_ITEM_TYPES = (
    "message, function_call, function_call_output, reasoning, mcp_list_tools, mcp_call, mcp_approval_request, "
    "mcp_approval_response"
)


def check_item(item: InputItem, where: str) -> None:
    """An input item this gateway can store and translate, or a 400 naming what is wrong with it."""
    kind = item.type
    # Printable: an id is a clear column and a path segment (PostgreSQL's text refuses a NUL outright).
    if item.id is not None and not (1 <= len(item.id) <= MAX_ITEM_ID and item.id.isprintable()):
        raise bad_request(f"{where}.id must be 1 to {MAX_ITEM_ID} printable characters.", param=f"{where}.id")
    if kind is None and item.role is None:
        raise bad_request(
            f"{where} has no 'type' or 'role'. Item references (type 'item_reference') are not supported by "
            f"this gateway yet; send the item itself ({_ITEM_TYPES}).",
            param=where,
        )
    if kind in (None, "message"):
        if item.role not in _ROLES:
            raise bad_request(f"{where}.role must be one of: {', '.join(sorted(_ROLES))}.", param=f"{where}.role")
        if item.content is None:
            raise bad_request(f"{where} is a message without 'content'.", param=f"{where}.content")
        if isinstance(item.content, list) and not item.content:  # as OpenAI: at least one part
            raise bad_request(
                f"Invalid '{where}.content': empty array. Expected an array with minimum length 1.",
                param=f"{where}.content",
            )
        for j, part in enumerate(item.content if isinstance(item.content, list) else ()):
            _check_part(part, f"{where}.content[{j}]")
            _check_role_part(item.role, part.type, f"{where}.content[{j}]")
    elif kind == "function_call":
        if not item.call_id or item.name is None or item.arguments is None:
            raise bad_request(f"{where} is a function_call without 'call_id', 'name' and 'arguments'.", param=where)
        check_function_name(item.name, f"{where}.name", MAX_RESPONSES_NAME)  # the rule of the tools that made it
    elif kind == "function_call_output":
        if not item.call_id or item.output is None:
            raise bad_request(f"{where} is a function_call_output without 'call_id' and 'output'.", param=where)
        for j, part in enumerate(item.output if isinstance(item.output, list) else ()):
            _check_part(part, f"{where}.output[{j}]")
            if part.type not in _INPUT_PARTS:  # as OpenAI lists a function_call_output's parts
                raise bad_request(
                    f"{where}.output[{j}] has type '{echo(part.type)}': a function_call_output holds a string or "
                    f"{', '.join(sorted(_INPUT_PARTS))} parts.",
                    param=f"{where}.output[{j}].type",
                )
    elif kind in _MCP_ITEMS:
        _check_mcp_item(item, kind, where)
    elif kind != "reasoning":
        raise bad_request(
            f"{where} has type '{echo(kind)}', which this gateway does not serve yet: use {_ITEM_TYPES}.",
            param=f"{where}.type",
        )


_MCP_ITEMS = frozenset({"mcp_list_tools", "mcp_call", "mcp_approval_request", "mcp_approval_response"})


def _check_mcp_item(item: InputItem, kind: str, where: str) -> None:
    """MCP items a client sends back (from an earlier output) or answers with (an approval)."""
    if kind == "mcp_approval_response":
        if not item.approval_request_id or item.approve is None:
            raise bad_request(
                f"{where} is an mcp_approval_response without 'approval_request_id' and 'approve'.", param=where
            )
        return
    if not item.server_label or not item.id:
        raise bad_request(f"{where} is an {kind} item without 'id' and 'server_label'.", param=where)
    if kind == "mcp_list_tools" and item.tools is None:
        raise bad_request(f"{where} is an mcp_list_tools item without 'tools'.", param=where)
    if kind in ("mcp_call", "mcp_approval_request") and (item.name is None or item.arguments is None):
        raise bad_request(f"{where} is an {kind} item without 'name' and 'arguments'.", param=where)
    if kind == "mcp_call" and item.output is None and item.error is None:
        # A call without its result would leave the conversation unanswerable (docs/agents.md).
        raise bad_request(
            f"{where} is an mcp_call without 'output' or 'error': send a call with its result.", param=where
        )
    if kind == "mcp_call" and not isinstance(item.output, str | None):
        raise bad_request(f"{where}.output must be a string.", param=f"{where}.output")


_PART_TYPES = frozenset({"input_text", "output_text", "input_image", "input_file", "refusal"})
IMAGE_DETAILS = frozenset({None, "auto", "low", "high", "original"})  # OpenAI's ImageDetail (None: "auto")


# What each role's content holds, as OpenAI lists input items (InputMessageResource, OutputMessage): a
# part outside it could not be listed back in a shape the SDKs parse. An assistant's `input_text` is
# taken (OpenAI's input schema allows it) and stored as `output_text` (api/responses/items.py).
_ASSISTANT_PARTS = frozenset({"output_text", "refusal", "input_text"})
_INPUT_PARTS = frozenset({"input_text", "input_image", "input_file"})


def _check_role_part(role: str | None, kind: str, where: str) -> None:
    allowed = _ASSISTANT_PARTS if role == "assistant" else _INPUT_PARTS
    if kind not in allowed:
        shown = "output_text, refusal" if role == "assistant" else ", ".join(sorted(_INPUT_PARTS))
        raise bad_request(
            f"{where} has type '{echo(kind)}', which a message of role '{role}' cannot hold: use {shown}.",
            param=f"{where}.type",
        )


def _check_part(part: Part, where: str) -> None:
    if part.type not in _PART_TYPES:
        raise bad_request(
            f"{where} has type '{echo(part.type)}': use one of {', '.join(sorted(_PART_TYPES))}.", param=f"{where}.type"
        )
    if part.type in ("input_text", "output_text") and part.text is None:
        raise bad_request(f"{where} is a {part.type} part without 'text'.", param=f"{where}.text")
    if part.type == "input_image" and not part.image_url:
        raise bad_request(
            f"{where} is an input_image without 'image_url' (images by 'file_id' are not supported yet).",
            param=f"{where}.image_url",
        )
    if part.type == "input_image" and part.detail not in IMAGE_DETAILS:  # stored and listed as given
        raise bad_request(
            f"{where}.detail must be one of: {', '.join(sorted(d for d in IMAGE_DETAILS if d))}.",
            param=f"{where}.detail",
        )
    if part.type in ("input_file", "input_image") and part.file_id is not None:
        # An upstream file id names a file in one cloud account every tenant shares: it neither routes to
        # another cloud nor stays within its tenant (an image's beside its url went to a native upstream).
        send = "the file as 'file_data'" if part.type == "input_file" else "the image by 'image_url'"
        raise bad_request(
            f"{where} is an {part.type} by 'file_id', which is not supported: send {send}.",
            param=f"{where}.file_id",
            code="unsupported_parameter",
        )
    if part.type == "input_file" and not part.file_data:
        raise bad_request(f"{where} is an input_file without 'file_data'.", param=f"{where}.file_data")
    if part.type == "refusal" and part.refusal is None:
        raise bad_request(f"{where} is a refusal part without 'refusal'.", param=f"{where}.refusal")


# -- Conversations bodies -----------------------------------------------------------------------------


class CreateConversation(msgspec.Struct, forbid_unknown_fields=True):
    items: list[InputItem] | None = None
    metadata: dict[str, str] | None = None


class UpdateConversation(msgspec.Struct, forbid_unknown_fields=True):
    # Required, but null is OpenAI's too (the SDK's `update(id, metadata=None)`): it clears the metadata.
    metadata: dict[str, str] | None


class AddItems(msgspec.Struct, forbid_unknown_fields=True):
    items: list[InputItem]


_create_conv = msgspec.json.Decoder(CreateConversation)
_update_conv = msgspec.json.Decoder(UpdateConversation)
_add_items = msgspec.json.Decoder(AddItems)


_ITEMS = Counted("items", _PARTS, noun=_NOUN, sized=(_METADATA,), item_sized=_ITEM_SIZED)


def _decode_items(body: bytes, typed: msgspec.json.Decoder[Any]) -> Any:
    """A conversation's items body, its parts counted first when it is large (as a turn's `input`)."""
    if len(body) > COUNT_ITEMS_OVER:
        count_body(body, top_level(body), _ITEMS)
    return decode_body(body, typed)


def _items(items: list[InputItem] | None) -> None:
    if items is not None and len(items) > MAX_CONVERSATION_ITEMS:
        raise bad_request(f"'items' holds at most {MAX_CONVERSATION_ITEMS} items per call.", param="items")
    for i, item in enumerate(items or ()):
        check_item(item, f"items[{i}]")


def parse_create_conversation(body: bytes) -> CreateConversation:
    req = _decode_items(body, _create_conv) if body.strip() else CreateConversation()
    _items(req.items)
    check_metadata(req.metadata)
    return req


def parse_update_conversation(body: bytes) -> UpdateConversation:
    req: UpdateConversation = _decode_items(body, _update_conv)
    check_metadata(req.metadata)
    return req


def parse_add_items(body: bytes) -> AddItems:
    req: AddItems = _decode_items(body, _add_items)
    _items(req.items)
    return req
