"""Bedrock Converse and InvokeModel bodies for the simulator: validate them as Bedrock does,
map them onto the kind-neutral chat planner (so replies follow the same deterministic rules as
every other kind), and render the plan in Bedrock's shapes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from ..anthropic import wire
from ..chat import BadRequest, ChatPlan
from ..content import embedding, estimate_tokens, split_every, split_words
from .invoke import base_model, is_claude

VALIDATION = "ValidationException"
TOP_LEVEL = frozenset(
    {
        "messages",
        "system",
        "inferenceConfig",
        "toolConfig",
        "guardrailConfig",
        "additionalModelRequestFields",
        "additionalModelResponseFieldPaths",
        "promptVariables",
        "requestMetadata",
        "performanceConfig",
        "serviceTier",
        "outputConfig",
    }
)
BLOCK_KEYS = frozenset(
    {
        "text",
        "image",
        "document",
        "video",
        "audio",
        "toolUse",
        "toolResult",
        "reasoningContent",
        "cachePoint",
        "guardContent",
        "citationsContent",
        "searchResult",
    }
)
IMAGE_FORMATS = {"png", "jpeg", "gif", "webp"}

GUARDRAIL_BLOCKED = "Sorry, the model cannot answer this question."
_ARG_PIECE = 16
_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123"  # real streams pad events with "p"


def invalid(message: str) -> BadRequest:
    return BadRequest(message, code=VALIDATION)


def _block_key(block: Any, where: str) -> str:
    if not isinstance(block, dict) or len(block) != 1 or next(iter(block)) not in BLOCK_KEYS:
        raise invalid(f"The model returned the following errors: {where} must set exactly one ContentBlock member.")
    return next(iter(block))


def to_chat_body(body: dict, model: str = "") -> dict:
    """A Converse request as the OpenAI-shaped body the shared planner reads. Raises BadRequest."""
    extra = set(body) - TOP_LEVEL
    if extra:
        raise invalid(
            f"Malformed input request: extraneous key [{sorted(extra)[0]}] is not permitted, please reformat your input and try again."
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid(
            "A conversation must start with a user message. Try again with a conversation that starts with a user message."
        )
    out: list[dict] = []
    for block in body.get("system") or ():
        if isinstance(block, dict) and isinstance(block.get("text"), str):
            out.append({"role": "system", "content": block["text"]})
    has_tool_blocks = False
    previous = None
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("user", "assistant"):
            raise invalid(f"messages.{i}.role: member must satisfy enum value set: [user, assistant]")
        if previous is None and role != "user":
            raise invalid(
                "A conversation must start with a user message. Try again with a conversation that starts with a user message."
            )
        if role == previous:
            raise invalid(
                "A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again."
            )
        previous = role
        content = m.get("content")
        if not isinstance(content, list) or not content:
            raise invalid(
                f"The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."
            )
        texts: list[dict] = []
        calls: list[dict] = []
        for j, block in enumerate(content):
            key = _block_key(block, f"messages.{i}.content.{j}")
            value = block[key]
            if key == "text":
                if not isinstance(value, str) or not value.strip():
                    raise invalid(
                        f"The text field in the ContentBlock object at messages.{i}.content.{j} is blank. Add text to the text field, and try again."
                    )
                texts.append({"type": "text", "text": value})
            elif key == "image":
                fmt = value.get("format") if isinstance(value, dict) else None
                src = value.get("source") if isinstance(value, dict) else None
                if fmt not in IMAGE_FORMATS or not isinstance(src, dict) or not isinstance(src.get("bytes"), str):
                    raise invalid(
                        f"messages.{i}.content.{j}.image: format must be png|jpeg|gif|webp and source.bytes base64"
                    )
                texts.append({"type": "image_url", "image_url": {"url": f"data:image/{fmt};base64,{src['bytes']}"}})
            elif key == "toolUse":
                has_tool_blocks = True
                if role != "assistant" or not isinstance(value, dict) or not isinstance(value.get("input"), dict):
                    raise invalid(
                        f"messages.{i}.content.{j}.toolUse must be in an assistant message with an object input"
                    )
                calls.append(
                    {
                        "id": value.get("toolUseId"),
                        "type": "function",
                        "function": {
                            "name": value.get("name"),
                            "arguments": msgspec.json.encode(value["input"]).decode(),
                        },
                    }
                )
            elif key == "reasoningContent":
                _check_reasoning(value, role, f"messages.{i}.content.{j}", model)
            elif key == "toolResult":
                has_tool_blocks = True
                if (
                    role != "user"
                    or not isinstance(value, dict)
                    or not isinstance(value.get("content"), list)
                    or not value["content"]
                ):
                    raise invalid(
                        f"messages.{i}.content.{j}.toolResult must be in a user message with non-empty content"
                    )
                text = " ".join(
                    c["text"] for c in value["content"] if isinstance(c, dict) and isinstance(c.get("text"), str)
                )
                out.append({"role": "tool", "tool_call_id": value.get("toolUseId"), "content": text})
        if role == "assistant":
            out.append(
                {
                    "role": "assistant",
                    "content": " ".join(t["text"] for t in texts if t["type"] == "text") or None,
                    **({"tool_calls": calls} if calls else {}),
                }
            )
        elif texts:
            out.append({"role": "user", "content": texts})
    chat: dict = {"messages": out}
    tc = body.get("toolConfig")
    if has_tool_blocks and not isinstance(tc, dict):
        raise invalid("The toolConfig field must be defined when using toolUse and toolResult content blocks.")
    if tc is not None:
        _tool_config(tc, chat)
    _inference(body.get("inferenceConfig"), chat)
    _output(body.get("outputConfig"), chat)
    return chat


def _check_reasoning(value: Any, role: str, where: str, model: str = "") -> None:
    """Reasoning replayed in the history: only in assistant turns; Claude's exactly as given (Claude
    checks the signature; Bedrock passes its words on); a model that signs nothing refuses a signature."""
    text = value.get("reasoningText") if isinstance(value, dict) else None
    if role != "assistant" or not isinstance(value, dict) or (text is None and "redactedContent" not in value):
        raise invalid(f"{where}.reasoningContent must be in an assistant message with reasoningText or redactedContent")
    if not is_claude(model):
        if isinstance(text, dict) and "signature" in text:  # Bedrock's words for gpt-oss (observed)
            raise invalid(
                "This model doesn't support the reasoningContent.reasoningText.signature field. "
                "Remove reasoningContent.reasoningText.signature and try again."
            )
        return
    if text is not None and (
        not isinstance(text, dict)
        or not isinstance(text.get("text"), str)
        or text.get("signature") != wire.thinking_signature(text["text"])
    ):
        raise invalid(f"The model returned the following errors: {where}: Invalid `signature` in `thinking` block")


# The reasoning a model writes: (text, signature); non-Claude models sign nothing.
Thought = tuple[str, "str | None"]
GPT_OSS_EFFORTS = ("low", "medium", "high")  # gpt-oss's reasoning_effort (its default: medium)


def _asked(chat: dict) -> str:
    asked = next((m["content"] for m in reversed(chat["messages"]) if m["role"] == "user"), "")
    return asked if isinstance(asked, str) else " ".join(p.get("text", "") for p in asked if isinstance(p, dict))


def thought_for(body: dict, model: str, chat: dict) -> Thought | None:
    """The reasoning the model (simulated) writes: Claude when additionalModelRequestFields asks for
    thinking, after Anthropic's rules as Bedrock relays them; OpenAI's gpt-oss always (at its
    `reasoning_effort`, a field of additionalModelRequestFields) and DeepSeek-R1 always, unsigned.
    None when the model does not reason."""
    extra = body.get("additionalModelRequestFields")
    base = base_model(model)
    if base.startswith("openai.gpt-oss"):
        effort = extra.get("reasoning_effort", "medium") if isinstance(extra, dict) else "medium"
        if effort not in GPT_OSS_EFFORTS:
            raise invalid(
                f"The model returned the following errors: reasoning_effort: unknown variant {effort!r}, "
                "expected one of 'low', 'medium', 'high'"
            )
        return f"The user said: {_asked(chat)}. Reasoning at {effort} effort.", None
    if base.startswith("deepseek.r1"):
        return f"The user said: {_asked(chat)}. Let me think this through.", None
    thinking = extra.get("thinking") if isinstance(extra, dict) else None
    if thinking is None or not is_claude(model):
        return None
    inner = {
        "max_tokens": chat.get("max_tokens") or 4096,
        "thinking": thinking,
        "temperature": (body.get("inferenceConfig") or {}).get("temperature"),
        "top_p": (body.get("inferenceConfig") or {}).get("topP"),
        "tool_choice": {"type": "any"} if chat.get("tool_choice") not in (None, "auto", "none") else None,
    }
    try:
        wire.check_thinking(inner)
    except BadRequest as exc:
        raise invalid(f"The model returned the following errors: {exc.message}") from None
    if wire.thinking_budget(inner) is None:
        return None
    text = f"The user said: {_asked(chat)}. Answer plainly."
    return text, wire.thinking_signature(text)


def _reasoning_block(thought: Thought) -> dict:
    text, signature = thought
    reasoning: dict[str, str] = {"text": text}
    if signature is not None:
        reasoning["signature"] = signature
    return {"reasoningContent": {"reasoningText": reasoning}}


def _tool_config(tc: Any, chat: dict) -> None:
    tools = tc.get("tools") if isinstance(tc, dict) else None
    if not isinstance(tools, list) or not tools:
        raise invalid("toolConfig.tools: member must have length greater than or equal to 1")
    fns = []
    for k, t in enumerate(tools):
        spec = t.get("toolSpec") if isinstance(t, dict) else None
        if spec is None and isinstance(t, dict) and "cachePoint" in t:
            continue
        schema = spec.get("inputSchema", {}).get("json") if isinstance(spec, dict) else None
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(schema, dict):
            raise invalid(f"toolConfig.tools.{k}.toolSpec needs a name and inputSchema.json")
        fns.append(
            {
                "type": "function",
                "function": {"name": spec["name"], "description": spec.get("description"), "parameters": schema},
            }
        )
    chat["tools"] = fns
    choice = tc.get("toolChoice")
    if choice is None or "auto" in choice:
        chat["tool_choice"] = "auto"
    elif "any" in choice:
        chat["tool_choice"] = "required"
    elif isinstance(choice.get("tool"), dict) and isinstance(choice["tool"].get("name"), str):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["tool"]["name"]}}
    else:
        raise invalid("toolConfig.toolChoice must be one of auto, any, tool")


def _inference(cfg: Any, chat: dict) -> None:
    if cfg is None:
        return
    if not isinstance(cfg, dict):
        raise invalid("inferenceConfig must be an object")
    mt = cfg.get("maxTokens")
    if mt is not None:
        if isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
            raise invalid("inferenceConfig.maxTokens: member must have value greater than or equal to 1")
        chat["max_tokens"] = mt
    for name in ("temperature", "topP"):
        v = cfg.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1):
            raise invalid(f"inferenceConfig.{name}: member must have value less than or equal to 1")
    stops = cfg.get("stopSequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise invalid("inferenceConfig.stopSequences must be a list of non-empty strings")
        chat["stop"] = stops[:4]


def _output(cfg: Any, chat: dict) -> None:
    if cfg is None:
        return
    fmt = cfg.get("textFormat") if isinstance(cfg, dict) else None
    js = (fmt or {}).get("structure", {}).get("jsonSchema") if isinstance(fmt, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(js, dict):
        raise invalid("outputConfig.textFormat must be {type: json_schema, structure: {jsonSchema: {...}}}")
    try:
        schema = msgspec.json.decode(js.get("schema") or "")
    except (msgspec.DecodeError, TypeError):
        raise invalid(
            "outputConfig.textFormat.structure.jsonSchema.schema must be a JSON schema encoded as a string"
        ) from None
    chat["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": js.get("name") or "output", "schema": schema},
    }


# -- rendering -------------------------------------------------------------------------------


def _stop_reason(finish: str, filtered: str | None) -> str:
    if filtered == "prompt":
        return "guardrail_intervened"
    return {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "content_filtered"}[
        finish
    ]


def tool_id(call_id: str) -> str:
    return "tooluse_" + call_id.removeprefix("call_")


def _usage(plan: ChatPlan, output_tokens: int) -> dict:
    return {
        "inputTokens": plan.prompt_tokens,
        "outputTokens": output_tokens,
        "totalTokens": plan.prompt_tokens + output_tokens,
    }


def _latency(plan: ChatPlan) -> int:
    return 100 + plan.completion_tokens  # deterministic


def render_converse(plan: ChatPlan, filtered: str | None, thought: Thought | None = None) -> dict:
    c = plan.choices[0]
    if filtered == "prompt":
        content: list[dict] = [{"text": GUARDRAIL_BLOCKED}]
        usage = _usage(plan, 0)
    elif c.tool_calls:
        content = [
            {
                "toolUse": {
                    "toolUseId": tool_id(t["id"]),
                    "name": t["function"]["name"],
                    "input": msgspec.json.decode(t["function"]["arguments"]),
                }
            }
            for t in c.tool_calls
        ]
        usage = _usage(plan, c.completion_tokens)
    else:
        content = [{"text": c.content}] if c.content else []
        usage = _usage(plan, c.completion_tokens)
    if thought is not None and filtered != "prompt":
        content.insert(0, _reasoning_block(thought))
        usage = {**usage, "outputTokens": usage["outputTokens"] + estimate_tokens(thought[0])}
        usage["totalTokens"] = usage["inputTokens"] + usage["outputTokens"]
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": _stop_reason(c.finish_reason, filtered),
        "usage": usage,
        "metrics": {"latencyMs": _latency(plan)},
    }


def stream_events(
    plan: ChatPlan, filtered: str | None, thought: Thought | None = None
) -> Iterator[tuple[bool, str, dict]]:
    """(is_content, event type, payload) in Bedrock's order; is_content marks contentBlockDelta.
    With a `thought`, the model's reasoning is block 0 (text deltas, then Claude's signature)."""
    c = plan.choices[0]
    yield False, "messageStart", {"role": "assistant", "p": _PADDING[:10]}
    output_tokens = c.completion_tokens
    shift = 0
    if thought is not None and filtered != "prompt":
        shift = 1
        text_of_thought, signature = thought
        output_tokens += estimate_tokens(text_of_thought)
        for word in split_words(text_of_thought):
            yield True, "contentBlockDelta", {"delta": {"reasoningContent": {"text": word}}, "contentBlockIndex": 0}
        if signature is not None:
            yield (
                False,
                "contentBlockDelta",
                {"delta": {"reasoningContent": {"signature": signature}}, "contentBlockIndex": 0},
            )
        yield False, "contentBlockStop", {"contentBlockIndex": 0, "p": _PADDING[:2]}
    text: str | None
    if filtered == "prompt":
        text, output_tokens = GUARDRAIL_BLOCKED, 0
    else:
        text = c.content
    if c.tool_calls and filtered != "prompt":
        for j, call in enumerate(c.tool_calls):
            fn = call["function"]
            yield (
                False,
                "contentBlockStart",
                {
                    "start": {"toolUse": {"toolUseId": tool_id(call["id"]), "name": fn["name"]}},
                    "contentBlockIndex": j + shift,
                    "p": _PADDING[:20],
                },
            )
            for piece in split_every(fn["arguments"], _ARG_PIECE):
                yield (
                    True,
                    "contentBlockDelta",
                    {"delta": {"toolUse": {"input": piece}}, "contentBlockIndex": j + shift, "p": _PADDING[:7]},
                )
            yield False, "contentBlockStop", {"contentBlockIndex": j + shift, "p": _PADDING[:3]}
    else:
        for word in c.pieces or split_words(text or ""):
            yield (
                True,
                "contentBlockDelta",
                {"delta": {"text": word}, "contentBlockIndex": shift, "p": _PADDING[: len(word) % 20 + 1]},
            )
        yield False, "contentBlockStop", {"contentBlockIndex": shift, "p": _PADDING[:5]}
    yield False, "messageStop", {"stopReason": _stop_reason(c.finish_reason, filtered), "p": _PADDING[:12]}
    yield (
        False,
        "metadata",
        {"usage": _usage(plan, output_tokens), "metrics": {"latencyMs": _latency(plan)}, "p": _PADDING[:4]},
    )


# -- InvokeModel embeddings ------------------------------------------------------------------

TITAN_DIMENSIONS = (256, 512, 1024)


def _model_family(model: str) -> str | None:
    base = model.rsplit("/", 1)[-1]
    base = (
        base.split(".", 1)[1] if base.split(".", 1)[0] in ("us", "eu", "apac", "global", "jp", "au", "us-gov") else base
    )
    if base.startswith("amazon.titan-embed"):
        return "titan"
    if base.startswith("cohere.embed"):
        return "cohere"
    return None


def render_invoke(body: dict, model: str) -> tuple[dict, int]:
    """The InvokeModel reply body and its input token count (which Bedrock sends in the
    `x-amzn-bedrock-input-token-count` header, not in every model's body)."""
    family = _model_family(model)
    if family == "titan":
        text = body.get("inputText")
        if not isinstance(text, str) or not text:
            raise invalid(
                "Malformed input request: #: required key [inputText] not found, please reformat your input and try again."
            )
        extra = set(body) - {"inputText", "dimensions", "normalize", "embeddingTypes"}
        if extra:
            raise invalid(
                f"Malformed input request: #: extraneous key [{sorted(extra)[0]}] is not permitted, please reformat your input and try again."
            )
        dims = body.get("dimensions", 1024)
        if dims not in TITAN_DIMENSIONS:
            raise invalid(
                "Malformed input request: #/dimensions: "
                + f"{dims} is not a valid enum value, please reformat your input and try again."
            )
        tokens = estimate_tokens(text)
        return {"embedding": embedding(text.encode(), dims), "inputTextTokenCount": tokens}, tokens
    if family == "cohere":
        texts = body.get("texts")
        if (
            not isinstance(texts, list)
            or not texts
            or len(texts) > 96
            or not all(isinstance(t, str) and t for t in texts)
        ):
            raise invalid(
                "Malformed input request: #/texts: expected 1 to 96 non-empty strings, please reformat your input and try again."
            )
        if body.get("input_type") not in ("search_document", "search_query", "classification", "clustering"):
            raise invalid(
                "Malformed input request: #: required key [input_type] not found, please reformat your input and try again."
            )
        return (
            {
                "embeddings": [embedding(t.encode(), 1024) for t in texts],
                "id": "emb-" + str(len(texts)),
                "response_type": "embeddings_floats",
                "texts": texts,
            },
            sum(estimate_tokens(t) for t in texts),
        )
    raise invalid("The provided model identifier is invalid.")
