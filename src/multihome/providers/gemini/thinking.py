"""The client's reasoning settings as Gemini's `generationConfig.thinkingConfig`, and the thought
signatures Gemini asks back (docs/translation/reasoning.md).

Gemini 2.5 takes a token budget (`thinkingBudget`), Gemini 3 a level (`thinkingLevel`; a budget is
accepted but not advised, and the two together are refused). The effort table is the one Google's
own OpenAI-compatible endpoint documents (low 1024, medium 8192, high 24576 tokens); an Anthropic
client's exact `budget_tokens` is sent as the budget. Thoughts come back only with
`includeThoughts`, so it is set whenever the client asked for reasoning or for its summary.
"""

from __future__ import annotations

from typing import Any

from ...schema.chat import ParsedChat

# effort -> Gemini 2.5 thinkingBudget (0: no thinking). 24576 is 2.5 Flash's largest (Pro's is 32768).
BUDGETS = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 24576}
MAX_BUDGET = 24576
PRO_MIN_BUDGET = 128  # 2.5 Pro cannot stop thinking: its smallest budget stands for "none"
# effort -> Gemini 3 thinkingLevel. Gemini 3 cannot stop thinking: "minimal" is its least (Pro's: "low").
LEVELS = {"none": "minimal", "minimal": "minimal", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}
# Google's documented stand-in for the signature of a function call Gemini did not make (a history
# another model wrote, or a client that dropped it): Gemini 3 refuses the turn without one.
SKIP_SIGNATURE = "skip_thought_signature_validator"


def gemini_3(model: str) -> bool:
    return model.rsplit("/", 1)[-1].startswith("gemini-3")


def _pro(model: str) -> bool:
    return "-pro" in model.rsplit("/", 1)[-1]


def thinking_config(parsed: ParsedChat, model: str) -> dict[str, Any] | None:
    """`thinkingConfig` for `model`, or None when the client said nothing about reasoning (the
    model's own default applies; its thoughts are still counted and billed)."""
    effort, exact = parsed.request.reasoning_effort, parsed.thinking_budget
    if effort is None and exact is None and not parsed.reasoning_summary:
        return None
    config: dict[str, Any] = {}
    if gemini_3(model) and effort is not None:
        level = LEVELS.get(effort, "high")
        config["thinkingLevel"] = "low" if level == "minimal" and _pro(model) else level
    elif exact is not None:
        config["thinkingBudget"] = min(exact, MAX_BUDGET)
    elif effort is not None:
        budget = BUDGETS.get(effort, MAX_BUDGET)
        config["thinkingBudget"] = PRO_MIN_BUDGET if budget == 0 and _pro(model) else budget
    if effort != "none" or parsed.reasoning_summary:
        config["includeThoughts"] = True
    return config
