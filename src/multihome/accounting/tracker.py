"""Follow one call from admission to its record: limits before, durability before the first byte,
one CallRecord to every sink after (or, when every sink can read the call's facts without one, those
facts: CallFacts). Costs nothing when no sink, limiter or audit is configured."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from ..schema import estimate
from ..schema.chat import ChatRequest
from ..schema.errors import ApiError
from ..schema.principal import Principal
from .capture import Captured, CaptureSink
from .record import AttemptRecord, CallRecord, CallSink, Usage

if TYPE_CHECKING:
    from ..audit.writer import AuditLog
    from ..metering.limiter import Limiter, Ticket
    from ..routing.attempts import Served


# Reads a finished call's facts without a CallRecord (observability/call_metrics.py): the tracker,
# status, outcome, deployment, attempts (.deployment, .outcome), usage, latency ms, first byte ms of a
# stream (else None), error code.
CallObserver = Callable[
    ["CallTracker", int, str, "str | None", Iterable[Any], "Usage | None", float, "float | None", "str | None"], None
]


# A sink's `record_call`: the finished call's facts without a CallRecord, for a sink that reads only what
# the tracker and these hold (metering without a listening MeteredSink, the audit trail). When every sink
# has one, no CallRecord is made; a sink that needs the record after all (a MeteredSink listening) makes
# it with `tracker.record_of(*the arguments after the tracker)`: the very record the sinks would get.
# Arguments: the tracker, finished_at (unix seconds), the deployment that served (routing's
# DeploymentRuntime, or None), stream, routing's attempts (.deployment, .outcome, .ms, .reason; ms not yet
# rounded: see _attempts), status, outcome, error code, usage (None if nothing was produced), latency ms,
# first byte ms, tool calls ((name, id) pairs), the answer's sha256.
CallFacts = Callable[
    [
        "CallTracker",
        float,
        Any,
        bool,
        Sequence[Any],
        int,
        str,
        "str | None",
        "Usage | None",
        float,
        "float | None",
        Iterable[tuple[str, str]],
        "str | None",
    ],
    None,
]


# `finish_produced`'s usage when the caller gives none: read it (and the characters and tool calls) from
# the served answer.
FROM_SERVED: Any = object()


class Accounting:
    def __init__(
        self, sinks: list[CallSink] | None = None, limiter: Limiter | None = None, audit: AuditLog | None = None
    ) -> None:
        self.sinks = list(sinks or ())
        self.limiter = limiter  # metering.Limiter: admit() before the call
        self.audit = audit  # audit.AuditLog: call_started() durable before the answer
        self.trace_context = False  # keep the client's traceparent/tracestate on the record (telemetry)
        self.capture: CaptureSink | None = None  # content capture of the tenants it names (crypto/capture.py)
        # Takes the finished call's facts when it is their only consumer besides the sinks (metrics in a
        # config that meters nothing else: observability/call_metrics.py); needs no CallRecord.
        self.observer: CallObserver | None = None
        # Whether a sink reads the record's hashes: one that does not says so with `hashes = False`
        # (metering: no usage row holds one). Worked out again whenever the sinks differ from those it
        # was worked out for (they are appended to: app.py, tests).
        self._hash_for: list[CallSink] | None = None
        self._sinks_hash = True
        # Each sink's `record_call` when every sink has one (metering, the audit trail): they are then
        # handed the finished call's facts without a CallRecord (see CallFacts). Worked out with _sinks_hash.
        self._direct: tuple[CallFacts, ...] | None = None
        # Whether a sink reads the tool calls whatever happens (worked out with _sinks_hash), and the sinks
        # that say per call with `reads_tool_calls` (metering: only while a MeteredSink listens): a unary
        # answer's are looked for only when something reads them.
        self._calls_always = True
        self._calls_asked: tuple[Any, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.sinks or self.limiter or self.audit or self.observer)

    def _plan(self, sinks: list[CallSink]) -> None:
        """What the sinks read, worked out once for a list of sinks: hashes; the record, or only its facts."""
        self._sinks_hash = any(getattr(sink, "hashes", True) for sink in sinks)
        direct = [getattr(sink, "record_call", None) for sink in sinks]
        self._direct = tuple(direct) if direct and None not in direct else None  # type: ignore[arg-type]
        asked = tuple(sink for sink in sinks if hasattr(sink, "reads_tool_calls"))
        self._calls_always = len(asked) < len(sinks)
        self._calls_asked = asked
        self._hash_for = [*sinks]

    def _reads_tool_calls(self) -> bool:
        """Whether a sink reads the finished call's tool calls (after `_plan`)."""
        if self._calls_always:
            return True
        for sink in self._calls_asked:
            if sink.reads_tool_calls:
                return True
        return False

    def begin(
        self, request_id: str, endpoint: str, principal: Principal, body: bytes, model_group: str = "", request=None
    ) -> CallTracker | None:
        """The call's tracker (None when nothing is configured); `model_group` and `request` (the canonical
        request, for estimates) when already known."""
        if not (self.sinks or self.limiter or self.audit or self.observer):  # `enabled`, without its call
            return None
        # The hash is for the sinks that read it and the audit trail; an observer alone reads neither,
        # nor does metering. Without it the answer is not hashed either (api/pipeline.py).
        sinks = self.sinks
        if sinks != self._hash_for:  # the same sinks: a length and an identity check per sink, in C
            self._plan(sinks)
        digest = hashlib.sha256(body).hexdigest() if self._sinks_hash or self.audit or self.capture else ""
        tracker = CallTracker(self, request_id, endpoint, principal, digest, model_group, request)
        if self.capture is not None and principal.tenant in self.capture.tenants:
            tracker.capture = Captured(body, self.capture.max_bytes)
        return tracker


def outcome_of(err: ApiError) -> str:
    if err.status in (401, 403):
        return "denied"
    if err.body.code in ("budget_exceeded", "rate_limit_exceeded"):
        # Refused at admission (nothing counted), or after routing called a deployment and the one it would
        # fail over to was at its own rate limit (admitted: its row counts, as a declined call's does).
        return "declined" if err.attempts else "denied"
    if err.body.code in (
        "all_deployments_failed",
        "all_deployments_throttled",
        "routing_budget_exhausted",
        "all_deployments_unavailable",
    ):
        return "declined"
    return "client_error"


class CallTracker(msgspec.Struct, eq=False):
    """One call's accounting, from admission to its record. A Struct: made in C in one call per call,
    every field it is not given at its default (a Python __init__ setting 18 attributes cost ~60
    opcodes a call); compared by identity, as before."""

    acc: Accounting
    request_id: str
    endpoint: str
    principal: Principal
    request_sha256: str
    model_group: str = ""
    request: Any = None  # the canonical chat or embeddings request, for usage estimates
    started_at: float = msgspec.field(default_factory=time.time)
    _t0: float = msgspec.field(default_factory=time.perf_counter)
    policy_code: str | None = None  # set by api.policy_gate: the decision's code
    entitlement_id: str | None = None  # and the grant that licensed or refused the call
    ticket: Ticket | None = None
    # The call's `call_started` on disk (audit): the answer waits for it. A future, awaited as it is
    # (api/pipeline.py), not through a coroutine of the tracker's.
    durable: asyncio.Future[int] | None = None
    finished: bool = False
    traceparent: bytes | None = None  # set by the front door when accounting.trace_context
    tracestate: bytes | None = None
    served: Served | None = None  # once an upstream answered: from then on the call is charged
    capture: Captured | None = None  # the prompt and answer, when the tenant has content capture on
    tier: str | None = None  # the service tier the call asked for (api/pipeline.py), for its price
    # Routing's attempts while it walks (the walk's own list: api/pipeline.py): a call that ends before a
    # deployment served it (the client left, a drain) is still charged for the answers it got (`_unserved`).
    walked: list | None = None

    async def admit(self, group, deployments, max_output_tokens: int | None) -> Sequence[tuple[bytes, bytes]]:
        """Limits and budgets (may raise 429); then start making the call's start durable. The answer's
        headers they add (the ticket's own: not to be changed)."""
        headers = self.admit_at_once(group, deployments, max_output_tokens)
        return await self.admit_awaited(group, deployments, max_output_tokens) if headers is None else headers

    async def admit_awaited(self, group, deployments, max_output_tokens: int | None) -> Sequence[tuple[bytes, bytes]]:
        """`admit` once `admit_at_once` answered None: the limiter's counters need a round trip (Redis), or
        the store must read back a dropped in-process counter (metering/budget_bound.py). The limiter goes on
        from what `at_once` planned or found for this call."""
        assert self.acc.limiter is not None  # only the limiter's shared counters need an await
        prompt, choices = estimate.admission(self.request)
        answers = group.answers
        if answers > 1:  # as in admit_at_once
            prompt, choices = prompt * answers, choices * answers
        self.ticket = ticket = await self.acc.limiter.admit(
            self.principal,
            group.name,
            deployments,
            prompt,
            max_output_tokens,
            self.request_id,
            choices,
            self.tier,
            group.fallback_deployments,
        )
        self._started(group)
        return ticket.headers

    def admit_at_once(self, group, deployments, max_output_tokens: int | None) -> Sequence[tuple[bytes, bytes]] | None:
        """`admit` when it needs no await (no limiter, in-process counters, or shared ones this process's
        leases cover), else None: the limiter's counters need a round trip to Redis, for `admit`. Costs no
        coroutine."""
        self.model_group = name = group.name
        headers: Sequence[tuple[bytes, bytes]] = ()
        acc = self.acc
        limiter = acc.limiter
        if limiter is not None:
            if limiter.rules.any:
                request = self.request
                if type(request) is ChatRequest and request.n is None and request.best_of is None:
                    prompt, choices = estimate.prompt_tokens(request), 1  # estimate.admission's usual case
                else:
                    prompt, choices = estimate.admission(request)
                answers = group.answers
                if answers > 1:  # a group that hedges or fails over on refusals: the reservation covers each
                    # answer the call may be billed for (docs/metering.md "Unserved answers are reserved for")
                    prompt, choices = prompt * answers, choices * answers
            else:  # no budget or limit to reserve or count against: no estimate (the rules are live)
                prompt, choices = 0, 1
            # At the prices of the service tier the call asked for (None: the deployments' own), and of the
            # deployments the call may fall back to (its fallback groups': it may be charged theirs).
            ticket = limiter.at_once(
                self.principal,
                name,
                deployments,
                prompt,
                max_output_tokens,
                self.request_id,
                choices,
                self.tier,
                group.fallback_deployments,
            )
            if ticket is None:
                return None
            self.ticket = ticket
            headers = ticket.headers
        audit = acc.audit
        if audit is not None:  # _started, written out (every call with the audit on runs it)
            self.durable = audit.call_started(self.request_id, self.principal, name, self.endpoint, self.request_sha256)
        return headers

    def _started(self, group) -> None:
        if self.acc.audit is not None:
            # Runs while the upstream works; the answer waits for it (see docs/audit.md).
            self.durable = self.acc.audit.call_started(
                self.request_id, self.principal, group.name, self.endpoint, self.request_sha256
            )

    def finish(
        self,
        status: int,
        outcome: str,
        *,
        served=None,
        usage=None,
        content_chars: int | Callable[[], int] = 0,
        tool_calls=(),
        response_sha256: str | None = None,
        first_byte_ms: float | None = None,
        error_code: str | None = None,
        attempts=None,
    ) -> None:
        """Finish the call with the usage, characters and tool calls given (not read from `served`)."""
        self.finish_produced(
            served,
            status,
            outcome,
            error_code=error_code,
            response_sha256=response_sha256,
            first_byte_ms=first_byte_ms,
            usage=usage,
            content_chars=content_chars,
            tool_calls=tool_calls,
            attempts=attempts,
        )

    def record_of(
        self,
        finished_at: float,
        dep,
        stream: bool,
        attempts: Sequence[Any],
        status: int,
        outcome: str,
        error_code: str | None,
        usage: Usage | None,
        latency_ms: float,
        first_byte_ms: float | None,
        tool_calls: Iterable[tuple[str, str]],
        response_sha256: str | None,
    ) -> CallRecord:
        """The CallRecord of the finished call's facts (CallFacts' arguments, after the tracker)."""
        if dep is not None:
            name, provider, kind, region, zone = dep.name, dep.provider, dep.adapter.kind, dep.region, dep.data_zone
        else:
            name = provider = kind = region = zone = None
        who = self.principal
        # Positionally, in CallRecord's field order: msgspec takes 30 keywords (or a mapping's) at ~7x
        # the instructions.
        return CallRecord(
            self.request_id,
            self.started_at,
            finished_at,
            self.endpoint,
            who.tenant,
            who.subject,
            who.source,  # principal_source
            who.team,
            who.key_id,
            self.model_group,
            name,  # deployment
            provider,
            kind,  # provider_kind
            region,
            zone,  # data_zone
            stream,
            _attempts(attempts),
            status,
            outcome,
            error_code,
            usage,
            latency_ms,
            first_byte_ms,
            self.policy_code,
            self.entitlement_id,
            tuple(tool_calls),
            self.request_sha256,
            response_sha256,
            self.traceparent.decode("latin-1") if self.traceparent else None,
            self.tracestate.decode("latin-1") if self.tracestate else None,
            self.tier,
        )

    def finish_produced(
        self,
        served,
        status: int,
        outcome: str,
        *,
        error_code: str | None = None,
        response_sha256: str | None = None,
        first_byte_ms: float | None = None,
        usage: Any = FROM_SERVED,
        content_chars: int | Callable[[], int] = 0,
        tool_calls: Iterable[tuple[str, str]] = (),
        attempts=None,
    ) -> None:
        """Finish a call (once; later calls do nothing). An upstream answered (`served`): charged for
        what it produced, as far as the gateway saw it (the whole answer, the stream so far), whether or
        not the client got it; its usage, characters and tool calls read from the answer unless given
        (`finish`). The one implementation of finishing, in one frame: a call's finish runs cache-cold,
        where each function entered costs more than its opcodes (bench/RESULTS.md)."""
        if self.finished:
            return
        self.finished = True
        durable = self.durable
        if durable is not None and not durable.done():
            durable.add_done_callback(_swallow)
        acc = self.acc
        peek = None  # a unary answer's: its tool calls are read below, only if something reads them
        if served is not None:
            dep = served.deployment
            if attempts is None:
                attempts = served.attempts
            relay = served.stream
            stream = relay is not None
            if usage is FROM_SERVED:
                if relay is not None:
                    usage, content_chars, tool_calls = relay.usage, relay.content_chars, relay.tool_calls
                else:
                    peek = served.peek
                    # The answer's characters only if there is no usage to charge (an estimate): see _usage.
                    usage, content_chars = (peek.usage, peek.content_chars) if peek else (None, 0)
            produced = served.status < 300 or outcome in _PRODUCED
            if len(attempts) > 1:  # an answer billed and not served is never the only attempt of a served call
                self._unserved(attempts)
        else:
            dep = None
            if not attempts:  # None, or an error routing raised without its attempts (an adapter's 400)
                attempts = self.walked or ()
            stream = False
            if usage is FROM_SERVED:
                usage = None
            produced = outcome in _PRODUCED
            if attempts:  # declined, or ended while routing walked (the client left after a refusal)
                self._unserved(attempts)
        if not produced:
            record_usage = None
        elif usage is not None and (usage.prompt_tokens or usage.completion_tokens):
            # The books' usage of an upstream's (schema.peek.Usage), written out here for the usual case
            # (each count in range: no call per count); `_usage` is the same for the rest.
            prompt, completion = usage.prompt_tokens, usage.completion_tokens
            if (prompt | completion) >> 31:  # either negative or past _MAX_COUNT (2**31 - 1): one test for four
                prompt, completion = _count(prompt), _count(completion)
            details = usage.prompt_tokens_details
            if details is None:
                cached = 0
            else:
                cached = details.cached_tokens or 0
                if not 0 <= cached <= prompt:
                    cached = min(_count(cached), prompt)
            # reasoning_tokens is part of completion_tokens: bounded by it, never added to it.
            reasoning = usage.reasoning_tokens
            if not 0 <= reasoning <= completion:
                reasoning = min(max(reasoning, 0), completion)
            record_usage = Usage(prompt, completion, cached, False, reasoning)
        else:
            record_usage = self._usage(usage, content_chars)
        # Milliseconds to three decimals, half up: `round(x, 3)` goes through a decimal string (~3,100
        # instructions under callgrind), this floor ~1,100; the two differ only on a half of a microsecond.
        latency_ms = ((time.perf_counter() - self._t0) * 1_000_000 + 0.5) // 1 / 1000
        observer = acc.observer
        if observer is not None:
            observer(
                self,
                status,
                outcome,
                dep.name if dep else None,
                attempts,
                record_usage,
                latency_ms,
                first_byte_ms if stream else None,
                error_code,
            )
        sinks = acc.sinks
        captured = self.capture is not None and acc.capture is not None
        if not sinks and not captured:
            return
        finished_at = time.time()
        if sinks != acc._hash_for:  # changed since this call began (tests, start-up)
            acc._plan(sinks)
        direct = acc._direct
        if peek is not None and (captured or direct is None or acc._calls_always or acc._reads_tool_calls()):
            choices = peek.choices
            message = choices[0].message if len(choices) == 1 else None
            # A one-choice answer without tool calls (the usual case) has none, without a call for it.
            tool_calls = () if message is not None and not message.tool_calls and not peek.output else peek.tool_calls()
        if direct is not None and not captured:
            for record_call in direct:
                record_call(
                    self,
                    finished_at,
                    dep,
                    stream,
                    attempts,
                    status,
                    outcome,
                    error_code,
                    record_usage,
                    latency_ms,
                    first_byte_ms,
                    tool_calls,
                    response_sha256,
                )
            return
        record = self.record_of(
            finished_at,
            dep,
            stream,
            attempts,
            status,
            outcome,
            error_code,
            record_usage,
            latency_ms,
            first_byte_ms,
            tool_calls,
            response_sha256,
        )
        for sink in sinks:
            sink.record(record)
        if self.capture is not None and acc.capture is not None:
            acc.capture.record(self.capture, record)

    def charges(self, served: Served) -> list[tuple[str, Usage]]:
        """(deployment, usage) of every upstream answer a served unary call is charged for, as it is charged
        (`finish_produced` and `_unserved`: the same readings, estimates and bounds): its unserved answers,
        then the one served. For a caller that keeps its own account of the call's cost at the same prices
        (an agent run's `max_spend`: api/memory_embeddings.py), so it counts what the meter counted."""
        out: list[tuple[str, Usage]] = []
        if len(served.attempts) > 1:
            for attempt in served.attempts:
                billed = getattr(attempt, "billed", None)
                if billed is not None:
                    dep, peek = billed
                    out.append((dep.name, self._books_of(peek.usage, peek.content_chars)))
        peek = served.peek
        out.append(
            (served.deployment.name, self._books_of(peek.usage, peek.content_chars) if peek else self._usage(None, 0))
        )
        return out

    def _books_of(self, usage, content_chars: int | Callable[[], int]) -> Usage:
        """An answer's usage as the books hold it: the upstream's counts, or the estimate when it counted none."""
        if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
            return _books(usage)
        return self._usage(usage, content_chars)

    def _unserved(self, attempts: Sequence[Any]) -> None:
        """Charge the upstream answers the call got and did not serve (routing's `Attempt.billed`: a 200
        refusal it failed over from, a hedge's loser that completed), and the requests it sent and cancelled or
        timed out before their answer (a hedge lost, the client gone, the attempt's own timeout: the prompt's
        estimate, status 499): the provider
        bills each, so each is a call's worth of usage at its own deployment's prices, against the call's
        budgets and token limits, with a record of its own (`<request id>.<n>`, n its place in the attempts)
        to every sink."""
        acc = self.acc
        for n, attempt in enumerate(attempts, 1):
            billed = getattr(attempt, "billed", None)
            if billed is None:
                continue
            dep, peek = billed
            books = self._books_of(peek.usage, peek.content_chars)
            if self.ticket is not None:
                self.ticket.add_use(dep.name, books, self.tier)
            if not acc.sinks:
                continue
            record = msgspec.structs.replace(
                self.record_of(
                    time.time(),
                    dep,
                    False,
                    (attempt,),
                    499 if attempt.outcome in _UNANSWERED else 200,
                    "unserved",
                    attempt.outcome,
                    books,
                    attempt.ms,
                    None,
                    (),
                    None,
                ),
                request_id=f"{self.request_id}.{n}",
            )
            for sink in acc.sinks:
                sink.record(record)

    def _usage(self, usage, content_chars: int | Callable[[], int]) -> Usage:
        """The estimate for a produced answer without counted usage (none, or none counted for a non-empty
        input: the Gemini API's batch embeddings report no token count), and say so."""
        prompt = estimate.input_tokens(self.request)
        chars = content_chars if isinstance(content_chars, int) else content_chars()
        return Usage(prompt, chars // estimate.CHARS_PER_TOKEN, 0, estimated=prompt > 0 or usage is None)


class AttemptGate:
    """routing's AttemptGate for one admitted call: admission counted it on one deployment's rate limits
    (the ticket's `deployment`, or none when no planned deployment has a limit); each other deployment the
    walk would call (a failover, a hedge's partner, a fallback group's) is admitted on its own limits first
    (Limiter.admit_attempt), and passed over when at them. Made only when some deployment has a limit."""

    __slots__ = ("tracker", "max_output", "admitted", "refusal")

    def __init__(self, tracker: CallTracker, max_output: int | None) -> None:
        self.tracker = tracker
        self.max_output = max_output  # the client's cap of one choice (None: each deployment's own)
        charged = tracker.ticket.deployment if tracker.ticket is not None else None
        self.admitted: set[str] = {charged} if charged is not None else set()
        self.refusal: ApiError | None = None  # the last deployment at its limit: the 429 if nothing serves

    async def admit(self, dep) -> bool:
        """Whether the walk may call `dep` (its request and tokens counted on its own limits, if it has any)."""
        tracker = self.tracker
        limiter, ticket = tracker.acc.limiter, tracker.ticket
        if limiter is None or ticket is None or limiter.rules.for_deployment(dep.name) is None:
            self.admitted.add(dep.name)  # nothing to count there
            return True
        prompt, choices = estimate.admission(tracker.request)
        cap = dep.max_output_tokens or limiter.cfg.default_max_output_tokens
        refusal = await limiter.admit_attempt(ticket, dep.name, prompt, self.max_output, choices, cap)
        if refusal is not None:
            self.refusal = refusal
            return False
        self.admitted.add(dep.name)
        return True

    async def admit_retry(self, dep) -> bool:
        """Whether the walk may call `dep` again (a retry: one more request on its own limit, if it has one;
        its tokens are the call's, reserved once)."""
        tracker = self.tracker
        limiter, ticket = tracker.acc.limiter, tracker.ticket
        if limiter is None or ticket is None:
            return True
        spec = limiter.rules.for_deployment(dep.name)
        if spec is None or spec.rpm is None:
            return True
        return await limiter.admit_attempt(ticket, dep.name, 0, 0, 1, 0, tokens=False) is None


def _books(usage) -> Usage:
    """An upstream's usage (schema.peek.Usage) as the books hold it: `finish_produced`'s inline reading."""
    prompt, completion = _count(usage.prompt_tokens), _count(usage.completion_tokens)
    details = usage.prompt_tokens_details
    cached = min(_count(details.cached_tokens or 0), prompt) if details is not None else 0
    reasoning = min(max(usage.reasoning_tokens, 0), completion)
    return Usage(prompt, completion, cached, False, reasoning)


def _attempts(attempts: Sequence[Any]) -> tuple[AttemptRecord, ...]:
    """routing's attempts as the record's, their milliseconds to three decimals (as latency_ms). One
    attempt, the usual case, without a list comprehension's frame and list."""
    if len(attempts) == 1:
        a = attempts[0]
        return (AttemptRecord(a.deployment, a.outcome, (a.ms * 1000 + 0.5) // 1 / 1000, a.reason),)
    return tuple([AttemptRecord(a.deployment, a.outcome, (a.ms * 1000 + 0.5) // 1 / 1000, a.reason) for a in attempts])


# The usage rows' token columns are 32-bit on PostgreSQL: one larger count would fail its batch, and the
# writer retries a batch until it is written, so every later row (every tenant's) would wait behind it.
_MAX_COUNT = 2**31 - 1


def _count(tokens: int) -> int:
    """An upstream's token count as the books can hold it: never negative (no credit), never past the column."""
    return min(max(tokens, 0), _MAX_COUNT)


# An unserved attempt's outcomes that got no answer (a request sent, then cancelled or timed out): 499, as the
# gateway, the upstream's client, closed it.
_UNANSWERED = frozenset({"cancelled", "timeout"})
_PRODUCED = frozenset({"ok", "stream_error"})  # outcomes that carry usage (as does any call an upstream answered)


def _swallow(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def finish_failed(tracker: CallTracker | None, err: ApiError) -> None:
    """Record a call that ended in an error the gateway answered (denied, declined, bad request, or
    a gateway failure after an upstream answered: then it is charged for what was produced)."""
    if tracker is None or tracker.finished:
        return
    if tracker.served is not None:
        tracker.finish_produced(tracker.served, err.status, "gateway_error", error_code=err.body.code)
    else:
        tracker.finish(err.status, outcome_of(err), error_code=err.body.code, attempts=err.attempts)


def settle(tracker: CallTracker | None) -> None:
    """The last word on every request, however it ended (client gone, task cancelled, a send that
    failed): a call that began accounting gets its one record, and is charged if an upstream answered."""
    if tracker is None or tracker.finished:
        return
    if tracker.served is not None:
        tracker.finish_produced(tracker.served, 499, "cancelled")
    else:
        tracker.finish(499, "cancelled")
