"""OpenAI's `reasoning_effort` as a thinking budget, for the upstreams that take a token budget
instead of a level (Anthropic's `thinking.budget_tokens` on every Claude path; Bedrock Converse
passes the same object through `additionalModelRequestFields`).

One table, so every path turns an effort into the same budget (docs/translation/reasoning.md).
Anthropic's rules bound it: at least 1024 tokens, and below `max_tokens`, which counts thinking
and answer together, as OpenAI's `max_completion_tokens` counts reasoning and answer together.
"""

from __future__ import annotations

_LOW, _MEDIUM = 1024, 4096
# effort -> thinking budget in tokens (None: no extended thinking).
BUDGETS: dict[str, int | None] = {
    "none": None,
    "minimal": None,
    "low": _LOW,
    "medium": _MEDIUM,
    "high": 16384,
    "xhigh": 32768,
    "max": 32768,  # as xhigh: with the answer's 4096 on top, within every Claude model's output limit
}
MIN_BUDGET = 1024  # Anthropic refuses a smaller budget


def thinking_budget(
    effort: str | None, max_tokens: int | None, default_answer: int, exact: int | None = None
) -> tuple[int | None, int | None]:
    """(budget, max_tokens to send). `exact`: a budget the client gave in tokens, which wins over
    the effort's. With no client limit the answer keeps `default_answer` tokens on top of the
    budget; a client limit is kept and the budget shrinks to fit under it (no thinking when fewer
    than MIN_BUDGET tokens would be left for it)."""
    budget = exact if exact is not None else BUDGETS.get(effort or "none")
    if budget is None:
        return None, max_tokens
    if max_tokens is None:
        return budget, budget + default_answer
    budget = min(budget, max_tokens - 1)
    return (budget, max_tokens) if budget >= MIN_BUDGET else (None, max_tokens)


def effort_of(budget: int) -> str:
    """The OpenAI effort nearest an Anthropic budget (for an Anthropic client reaching an OpenAI upstream)."""
    if budget <= _LOW:
        return "low"
    return "medium" if budget <= _MEDIUM else "high"
