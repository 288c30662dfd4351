"""Gemini thinking in the simulator, as Google documents it (ai.google.dev/gemini-api/docs/thinking,
.../thought-signatures):

- `generationConfig.thinkingConfig` is checked: `thinkingBudget` (-1 dynamic, 0 off, else tokens),
  `includeThoughts`, `thinkingLevel` (Gemini 3; not together with a budget);
- a model that thinks reports `usageMetadata.thoughtsTokenCount` apart from `candidatesTokenCount`
  (billed as output too), and with `includeThoughts` its thought summary comes first as a part with
  `thought: true`;
- thought signatures: the first functionCall part of an answer carries `thoughtSignature` whenever the
  model thought (Gemini 3 always thinks), and a Gemini 3 text answer carries one on its last part.
  Gemini 3 refuses a request whose current turn replays a function call without the signature it
  was given (400 INVALID_ARGUMENT), and an altered one.

What a simulator chooses (docs/simulators.md): Gemini 2.5 models think only when `thinkingConfig`
asks for it (a real 2.5 Flash also thinks by default), so plain requests keep their token counts;
the raw thoughts count four times the summary's tokens, capped by a positive budget.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import msgspec

from ..chat import BadRequest
from ..content import estimate_tokens, truncate_to_tokens

_KEY = b"multihome-simulated-gemini"
LEVELS = frozenset({"THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH"})
MAX_BUDGET = 32768  # Gemini 2.5 Pro's largest thinking budget (Flash: 24576)
# Google's documented stand-ins for a signature the client never had (a history from another model).
DUMMY_SIGNATURES = frozenset({"skip_thought_signature_validator", "context_engineering_is_the_way_to_go"})
_RAW_PER_SUMMARY = 4  # raw thought tokens per token of the summary the client sees


def _invalid(message: str) -> BadRequest:
    return BadRequest(message, code="INVALID_ARGUMENT")


def gemini3(model: str) -> bool:
    return model.rsplit("/", 1)[-1].startswith("gemini-3")


@dataclass(slots=True)
class Thinking:
    summary: str  # the thought summary (a `thought: true` part when `include`)
    tokens: int  # usageMetadata.thoughtsTokenCount
    include: bool  # includeThoughts
    signed: bool  # answers carry thought signatures


def signature(call: dict[str, Any]) -> str:
    """The signature the simulator gives a function call part: an HMAC of the call, base64 (the
    SDK reads thoughtSignature as bytes), so a changed call or signature on the way back is caught."""
    return base64.b64encode(_digest(call)).decode()


def _digest(call: dict[str, Any]) -> bytes:
    return hmac.new(_KEY, msgspec.json.encode(call, order="sorted"), hashlib.sha256).digest()


def text_signature(text: str) -> str:
    return base64.b64encode(hmac.new(_KEY, text.encode(), hashlib.sha256).digest()).decode()


def config_of(generation: Any, model: str) -> tuple[int | None, str | None, bool]:
    """(budget, level, includeThoughts) of `generationConfig.thinkingConfig`, checked."""
    cfg = generation.get("thinkingConfig") if isinstance(generation, dict) else None
    if cfg is None:
        return None, None, False
    where = "generation_config.thinking_config"
    if not isinstance(cfg, dict):
        raise _invalid(f"Invalid value at '{where}': expected an object.")
    for key in cfg:
        if key not in ("thinkingBudget", "includeThoughts", "thinkingLevel"):
            raise _invalid(f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': Cannot find field.")
    budget, level, include = cfg.get("thinkingBudget"), cfg.get("thinkingLevel"), cfg.get("includeThoughts", False)
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)):
        raise _invalid(f"Invalid value at '{where}.thinking_budget' (TYPE_INT32), {budget!r}")
    if not isinstance(include, bool):
        raise _invalid(f"Invalid value at '{where}.include_thoughts' (TYPE_BOOL), {include!r}")
    if level is not None:
        if not isinstance(level, str) or level.upper() not in LEVELS:
            raise _invalid(f"Invalid value at '{where}.thinking_level' (type.googleapis.com/ThinkingLevel), {level!r}")
        level = level.upper()
        if budget is not None:
            raise _invalid("thinking_budget and thinking_level are not supported together.")
        if not gemini3(model):
            raise _invalid("Thinking level is not supported for this model.")
    if budget is not None:
        if budget < -1 or budget > MAX_BUDGET:
            raise _invalid(
                f"The thinking budget {budget} is invalid. Please choose a value between -1 and {MAX_BUDGET}."
            )
        if budget == 0 and ("pro" in model or gemini3(model)):
            raise _invalid("Budget 0 is invalid. This model only works in thinking mode.")
    return budget, level, include


def thinking_of(body: dict[str, Any], model: str, asked: str) -> Thinking | None:
    """What the model thinks for `body` (None: no thinking). `asked`: the last user text, quoted."""
    budget, level, include = config_of(body.get("generationConfig"), model)
    if not gemini3(model) and (budget == 0 or (budget is None and not include)):
        return None  # Gemini 3 cannot stop thinking; 2.5 here thinks only when asked (module docstring)
    summary = f"The user asked: {asked}. I will answer plainly."
    tokens = estimate_tokens(summary) * _RAW_PER_SUMMARY
    if budget is not None and budget > 0:
        tokens = min(tokens, budget)
        summary = truncate_to_tokens(summary, max(1, budget // _RAW_PER_SUMMARY))
    if level == "MINIMAL":
        tokens = estimate_tokens(summary)
    return Thinking(summary, tokens, include, signed=True)


def check_signatures(contents: list[Any], model: str) -> None:
    """Gemini 3: every model turn of the current turn (after the last user text) must send back the
    signature of its first function call, unchanged. Earlier turns are not checked (Google's rule)."""
    if not gemini3(model):
        return
    start = 0
    for i, content in enumerate(contents):
        parts = content.get("parts") if isinstance(content, dict) else None
        if content.get("role", "user") == "user" and any(isinstance(p, dict) and "text" in p for p in parts or ()):
            start = i + 1
    for i in range(start, len(contents)):
        content = contents[i]
        if content.get("role") != "model":
            continue
        calls = [p for p in content.get("parts") or () if isinstance(p, dict) and "functionCall" in p]
        if not calls:
            continue
        first = calls[0]
        sent = first.get("thoughtSignature")
        name = first["functionCall"].get("name") if isinstance(first["functionCall"], dict) else None
        if sent is None:
            raise _invalid(
                "Function call is missing a thought_signature in functionCall parts. This is required for tools "
                "to work correctly, and missing thought_signature may lead to degraded model performance. "
                f"Additional data, function call `default_api:{name}` , position {i + 1}. Please refer to "
                "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
            )
        if not _accepted(sent, first["functionCall"]):
            raise _invalid("Corrupted thought signature.")


def _bytes(value: Any) -> bytes | None:
    """A proto `bytes` field's JSON value: base64 in either alphabet (the SDK sends the URL-safe one)."""
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value.replace("-", "+").replace("_", "/") + "=" * (-len(value) % 4), validate=True)
    except ValueError:
        return None


def _accepted(sent: Any, call: Any) -> bool:
    if sent in DUMMY_SIGNATURES or (_bytes(sent) or b"").decode("latin-1") in DUMMY_SIGNATURES:
        return True
    given = _bytes(sent)
    return given is not None and isinstance(call, dict) and hmac.compare_digest(given, _digest(call))
