"""Google's JSON parser takes a field by its lowerCamelCase JSON name or by its proto (snake_case)
name, and the google-genai SDK sends some fields the snake_case way (`parameters_json_schema`,
`response_json_schema`, `inlineData.mime_type`, `fileData.file_uri`). The simulator reads one
spelling: this turns every message field name into camelCase before the body is read.

Free-form values (a function's arguments and response, JSON schemas, labels) are user data whose
keys must stay as they are: the walk does not enter them.
"""

from __future__ import annotations

from typing import Any

# Fields whose values are google.protobuf.Struct / Value or user-keyed maps, never renamed inside.
_OPAQUE = frozenset(
    {
        "args",
        "response",
        "parameters",
        "parametersJsonSchema",
        "responseSchema",
        "responseJsonSchema",
        "responseJsonSchemaOrdering",
        "labels",
        "partialArgs",
    }
)


# The request fields the simulator reads under a two-word name. A snake_case name is renamed only
# when it is one of these, so an unknown field is refused under the name the client sent (as Google does).
_KNOWN = frozenset(
    {
        "allowedFunctionNames",
        "cachedContent",
        "candidateCount",
        "embedContentConfig",
        "fileData",
        "fileUri",
        "frequencyPenalty",
        "functionCall",
        "functionCallingConfig",
        "functionDeclarations",
        "functionResponse",
        "generateContentRequest",
        "generationConfig",
        "includeThoughts",
        "inlineData",
        "maxOutputTokens",
        "mediaResolution",
        "mimeType",
        "outputDimensionality",
        "parametersJsonSchema",
        "presencePenalty",
        "responseJsonSchema",
        "responseLogprobs",
        "responseMimeType",
        "responseModalities",
        "responseSchema",
        "safetySettings",
        "stopSequences",
        "systemInstruction",
        "taskType",
        "thinkingBudget",
        "thinkingConfig",
        "thinkingLevel",
        "thoughtSignature",
        "toolConfig",
        "topK",
        "topP",
        "autoTruncate",
        "videoMetadata",
        "displayName",
    }
)


def camel(name: str) -> str:
    """The camelCase JSON name of a known snake_case field name; any other name unchanged."""
    if "_" not in name:
        return name
    head, *rest = name.split("_")
    joined = head + "".join(w[:1].upper() + w[1:] for w in rest)
    return joined if joined in _KNOWN else name


def camel_keys(value: Any) -> Any:
    """`value` with every message field name in camelCase (the proto3 JSON mapping's two spellings)."""
    if isinstance(value, list):
        return [camel_keys(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, v in value.items():
        name = camel(key) if isinstance(key, str) else key
        out[name] = v if name in _OPAQUE else camel_keys(v)
    return out
