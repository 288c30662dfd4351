"""Plan, walk, and fall back to other model groups: the routing entry point for every front door."""

from __future__ import annotations

from typing import Any

from ..schema import estimate, tiers
from ..schema.chat import ChatRequest
from ..schema.errors import ApiError
from .attempts import NOT_CALLED, AllDeclined, Attempt, AttemptRunner, Build, Served, Translate
from .catalog import Catalog, GroupRuntime
from .planner import TOO_MUCH_OUTPUT, Plan, Planner, RequestShape


class Router:
    def __init__(self, catalog: Catalog, planner: Planner, runner: AttemptRunner) -> None:
        self.catalog = catalog
        self.planner = planner
        self.runner = runner

    def chain(self, group: GroupRuntime, shape: RequestShape) -> list[GroupRuntime]:
        """The group, then its fallback groups — unless the client narrowed to named deployments."""
        if shape.narrow is not None or not group.policy.fallback_groups:
            return [group]
        groups = self.catalog.groups  # a call that began before a config reload skips fallbacks it removed
        return [group, *(groups[name] for name in group.policy.fallback_groups if name in groups)]

    def plans(self, group: GroupRuntime, shape: RequestShape, *, explain: bool = False) -> list[Plan]:
        return [self.planner.plan(g, shape, explain=explain) for g in self.chain(group, shape)]

    async def route(
        self,
        group: GroupRuntime,
        shape: RequestShape,
        build: Build,
        translate: Translate,
        *,
        forward_usage: bool = False,
        request_id: str | None = None,
        attempts: list[Attempt] | None = None,
    ) -> Served:
        """`request_id`: sent upstream as `x-request-id`; `attempts`: the list the attempts go in (the
        caller's, to read them however the call ends), else one of its own."""
        if attempts is None:
            attempts = []
        chain = self.chain(group, shape)  # resolved once: a config reload mid-call does not change it
        plans = [self.planner.plan(g, shape) for g in chain] if len(chain) > 1 else [self.planner.plan(group, shape)]
        if not plans[0].ordered and not any(p.ordered for p in plans):
            raise _unsupported(group, plans[0], shape)
        last: AllDeclined | None = None
        gate = shape.gate
        for i, plan in enumerate(plans):
            if not plan.ordered:
                continue
            if gate is not None:  # each deployment the call's admission did not charge is admitted first
                plan.gate = gate
            if i > 0:
                attempts.append(Attempt(plan.group, "fallback_group", 0.0))
            if plan.considered:  # the hot path's plan lists only what it skipped
                attempts.extend(Attempt(s.deployment, "skipped", 0.0, s.reason) for s in plan.skipped)
            try:
                return await self.runner.run(
                    chain[i],
                    plan,
                    build,
                    translate,
                    stream=shape.stream,
                    forward_usage=forward_usage,
                    attempts=attempts,
                    request_id=request_id,
                )
            except AllDeclined as exc:
                if last is None or _called_since_fallback(attempts):
                    last = exc  # (a fallback walk that called nothing, all passed over, is no answer: docs/routing.md)
        assert last is not None
        if gate is not None and gate.refusal is not None and not _failure_among(attempts):
            raise _limited(last, gate.refusal, attempts) from None
        raise last

    def explain(self, group: GroupRuntime, shape: RequestShape) -> dict[str, Any]:
        plans = self.plans(group, shape, explain=True)
        breakers = self.planner.breakers.snapshot()
        return {
            "object": "route.explanation",
            "model": group.name,
            "fallback_groups": [p.group for p in plans[1:]],
            "plans": [p.to_dict() for p in plans],
            "breakers": {d: breakers[d] for p in plans for d in (c.deployment for c in p.considered) if d in breakers},
            "would_attempt": [d.name for p in plans for d in p.ordered],
            "policy": {
                "retries": group.policy.retries,
                "fail_over_on": group.policy.fail_over_on,
                "hedge_after_ms": group.policy.hedge_after_ms,
            },
        }


def _failure_among(attempts: list[Attempt]) -> bool:
    """Whether a deployment the call could use failed: it was called and declined (or the time budget ran
    out), or its breaker stood open. Then that failure is the call's answer, as if the deployments passed
    over for their rate limit did not exist: a 429 would tell the client to back off for a limit when a
    deployment is down. Skips for what the request needs or policy allows are not candidates."""
    for a in attempts:
        if a.outcome == "skipped":
            if a.reason is not None and a.reason.startswith("breaker"):
                return True
        elif a.outcome != "fallback_group":
            return True
    return False


def _called_since_fallback(attempts: list[Attempt]) -> bool:
    """Whether the fallback group walked last called a deployment (or ran out of time): else each was passed over
    at its own rate limit, and the answer is the earlier group's, as if they did not exist."""
    for a in reversed(attempts):
        if a.outcome == "fallback_group":
            return False
        if a.outcome not in NOT_CALLED:
            return True
    return False


def _limited(declined: AllDeclined, refusal: ApiError, attempts: list[Attempt]) -> AllDeclined:
    """Nothing served the call, no deployment failed, and one it would have failed over to was at its own
    rate limit: the 429 admission gives when every deployment is (the limiter's, Retry-After and all),
    saying what was tried."""
    err = ApiError(
        429,
        f"{declined.body.message} {refusal.body.message}",
        type=refusal.body.type,
        code=refusal.body.code,
        headers=refusal.headers,
    )
    return AllDeclined(err, attempts)


def _unsupported(group: GroupRuntime, plan: Plan, shape: RequestShape) -> ApiError:
    reasons = "; ".join(f"{s.deployment}: {s.reason}" for s in plan.skipped)
    if plan.skipped and all(s.reason.startswith(TOO_MUCH_OUTPUT) for s in plan.skipped) and shape.chat is not None:
        return _output_too_large(group, plan, shape.chat)
    tier = shape.chat.service_tier if shape.chat is not None else None
    if tier is not None and tiers.need(tier) in plan.needs and not _prices_tier(group, plan, tiers.need(tier)):
        return ApiError(
            400,
            f"service_tier '{tier}' is not available for model '{group.name}': no deployment that could take "
            f"the request has a price for it ({reasons}). Use 'auto' or 'default', or ask an operator to "
            f"price the tier (price.tiers.{tier} on a deployment of the model whose upstream takes service_tier).",
            param="service_tier",
            code="unsupported_service_tier",
        )
    if any(s.reason.startswith("breaker") for s in plan.skipped):
        return ApiError(
            503,
            f"No deployment of model '{group.name}' is available right now ({reasons}).",
            type="server_error",
            code="all_deployments_unavailable",
            headers={"retry-after": "1"},
        )
    return ApiError(
        400,
        f"No deployment of model '{group.name}' can take this request ({reasons}). "
        "Remove the unsupported feature, shorten the request, or use another model.",
        code="unsupported_capability",
    )


def _prices_tier(group: GroupRuntime, plan: Plan, need: str) -> bool:
    """Whether a deployment skipped for another reason (down, too small, ...) prices the tier: then the
    call is refused for that reason, not as a tier the model does not offer."""
    skipped = {s.deployment for s in plan.skipped}
    return any(need in d.capabilities for d in group.deployments if d.name in skipped)


def _output_too_large(group: GroupRuntime, plan: Plan, chat: ChatRequest) -> ApiError:
    """Every deployment passed over because the output asked for is more than it can give: OpenAI's own
    400 for a token limit above the model's, naming the field the client set."""
    asked = estimate.output_tokens(chat)
    names = {s.deployment for s in plan.skipped}
    most = max(d.max_output_tokens or 0 for d in group.deployments if d.name in names)
    param = "max_completion_tokens" if chat.max_completion_tokens is not None else "max_tokens"
    return ApiError(
        400,
        f"{param} is too large: {asked}. Model '{group.name}' supports at most {most} completion tokens, "
        f"whereas you provided {asked}.",
        param=param,
        code="invalid_value",
    )
