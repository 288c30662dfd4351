"""One request pipeline: the steps every model call takes, whichever front door it came through.

    client -> route table -> identify -> parse -> decide -> plan -> attempt -> account -> render
              (routes.py)    (gateway.py)  (door)  (policy_gate) (routing/planner, attempts) (tracker) (door)

A front door (api/openai/chat.py, api/openai/embeddings.py, api/anthropic/routes.py) is
*parse -> run -> render*: it parses its wire format into a canonical request, hands it to
`Pipeline.run`, and renders the `Served` answer in its own format. Identify happens once, in
the gateway, as the route table says; the rest of the middle happens here, once, for every door.
A `Call` carries what each step learns (who called, the accounting tracker, the stream being
sent, what served it) from the front door to the answer, the access log and a graceful stop.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from ..accounting.tracker import Accounting, AttemptGate, CallTracker
from ..providers.base import UpstreamRequest
from ..routing.attempts import AllDeclined, Attempt, Served
from ..routing.catalog import Catalog, DeploymentRuntime, GroupRuntime
from ..routing.planner import RequestShape
from ..routing.router import Router
from ..schema.bounded import Decoder
from ..schema.chat import ChatRequest
from ..schema.errors import ApiError, bad_request, echo, echo_quoted
from .asgi import Header, Scope, header, single
from .big_bodies import BigBodies
from .policy_gate import pin_refusal
from .read_only import INSUFFICIENT_ROLE, model_call_refusal
from .render import served_headers

if TYPE_CHECKING:
    from ..routing.stream_relay import StreamRelay
    from ..schema.principal import Principal
    from .drain import SseCut
    from .policy_gate import Admitted, PolicyGate
    from .routes import Route

_OUTPUT = frozenset({"max_tokens", "max_completion_tokens"})  # chat's output limits (a canonical request's)


_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))  # a forked worker draws its own ids


def new_request_id() -> str:
    """The time in milliseconds (12 hex digits), then 80 random bits from a generator seeded once per
    process by the OS: unique, not a secret (nothing is granted by knowing one), without a system call
    per request (os.urandom was one, and each system call gives the GIL away to the writer threads).
    Ids sort by time, so the tables keyed by them (usage rows, the contract ledger) insert at the end of
    their primary-key index: with random keys each insert lands on a random page of an index that
    outgrows the cache (SQLite: ~9 against ~25 us a row at two million rows, bench/RESULTS.md)."""
    return f"req_{int(time.time() * 1000):012x}{_ids.getrandbits(80):020x}"


class Call(msgspec.Struct, eq=False):
    """One HTTP call, from the route table to its answer: `Call(scope, request_id)`, filled as the steps
    run. A Struct (made in C, once per call; compared by identity, as before)."""

    scope: Scope
    request_id: bytes
    t0: float = msgspec.field(default_factory=time.perf_counter)  # when it began
    route: Route | None = None  # the route table's row it matched
    principal: Principal | None = None  # set by identify
    tracker: CallTracker | None = None  # set when accounting begins (None when none is configured)
    group: str | None = None  # the model group asked for, once it is known to exist
    served: Served | None = None  # the deployment that answered, and how it was reached
    stream: StreamRelay | SseCut | None = None  # the stream being sent: a graceful stop cuts it (api/drain.py)
    status: int = 0  # the HTTP status sent, for the access log
    work: str | None = None  # the kind of stateful work this call is (policy/pins.py), None: stateless


class Parsed(Protocol):
    """A canonical request as a front door parsed it (schema/chat.py ParsedChat, schema/embeddings.py)."""

    @property
    def raw(self) -> dict[str, msgspec.Raw]: ...
    @property
    def needs(self) -> frozenset[str]: ...
    @property
    def stream(self) -> bool: ...
    @property
    def request(self) -> Any: ...


# How a door asks a deployment's adapter for the upstream request, and reads its unary answer.
BuildRequest = Callable[[Any, DeploymentRuntime], Awaitable[UpstreamRequest]]
ReadResponse = Callable[[DeploymentRuntime, bytes, Any], bytes]


class Pipeline:
    """The middle of every model call: model group, decide, plan and attempt, account."""

    def __init__(
        self,
        catalog: Catalog,
        router: Router,
        max_body: int,
        gate: PolicyGate | None = None,
        accounting: Accounting | None = None,
    ) -> None:
        self.catalog = catalog
        self.router = router
        self.max_body = max_body
        self.gate = gate  # who may reach which deployments
        self.accounting = accounting  # limits, audit, metering
        self.bodies = BigBodies()  # where a door decodes a body over big_bodies.OFF_LOOP_OVER bytes

    def group(self, name: str) -> GroupRuntime:
        """The model group a request names; a 404 that lists the groups there are when it does not exist."""
        group = self.catalog.groups.get(name)
        if group is None:
            known = ", ".join(sorted(self.catalog.groups)) or "none"
            raise ApiError(
                404,
                f"The model '{echo(name)}' does not exist on this gateway. Available models: {known}.",
                param="model",
                code="model_not_found",
            )
        return group

    def shape(
        self, call: Call, parsed: Parsed, group: GroupRuntime, endpoint: str, chat: ChatRequest | None = None
    ) -> RequestShape:
        """What planning reads from the request, and the decision of policy (403 when it refuses): route
        explain's (`run` writes it out)."""
        shape = RequestShape(parsed.needs, parsed.stream, chat, narrowing(call.scope, parsed.raw, group))
        shape.policy = self.admit(call, group, endpoint)
        return shape

    def admit(self, call: Call, group: GroupRuntime, endpoint: str) -> Admitted | None:
        """The decision of policy for this caller on `group` (403 when it refuses); None without a policy gate."""
        if self.gate is None:
            return None
        assert call.principal is not None  # every route that reaches a model identifies first
        return self.gate.admit(call.principal, group, endpoint, call.tracker, call.work)

    async def run(
        self,
        call: Call,
        endpoint: str,
        body: bytes,
        parsed: Parsed,
        build: BuildRequest,
        read: ReadResponse,
        *,
        chat: ChatRequest | None = None,
        max_output: int | None = None,
        forward_usage: bool = False,
        dropped: list[str] | None = None,
        policy_endpoint: str | None = None,
        output_param: str | None = None,
        exclude: Mapping[str, str] | None = None,
    ) -> tuple[Served, list[Header]]:
        """Decide, plan, attempt and begin accounting for a parsed call: what served it, and the
        response headers that say so. From here on the call is charged, whatever becomes of the answer.
        `policy_endpoint`: the endpoint policy decides on, when not the one accounted (a memory
        embedding is accounted as `memory_embeddings`, decided as `embeddings`: api/memory_embeddings.py).
        `output_param`: the client's field for the output limit, when its API does not call it as chat does
        (a limit no deployment can give is a 400 naming it). `exclude`: deployments that cannot take this
        request, with why (planning passes over them, as over those at their own rate limit)."""
        group = self.catalog.groups.get(parsed.request.model) or self.group(parsed.request.model)  # (its 404)
        call.group = group.name
        request_id = call.request_id.decode()
        tracker = begin_call(call, self.accounting, endpoint, body, group, parsed.request)
        # self.shape and _admit_at_once written out: this runs once per call, cache-cold, where each
        # function entered costs more than its opcodes (bench/RESULTS.md).
        # What planning reads from the request, and the decision of policy (403 when it refuses).
        shape = RequestShape(parsed.needs, parsed.stream, chat, narrowing(call.scope, parsed.raw, group))
        if exclude:
            shape.exclude = exclude
        principal = call.principal
        if principal is not None and principal.read_only and policy_endpoint is None:
            # An auditor-only credential calls no model (a memory search's embedding, policy_endpoint, is its read).
            if tracker is not None:
                tracker.policy_code = INSUFFICIENT_ROLE
            raise model_call_refusal(principal, endpoint)
        gate = self.gate
        if gate is not None:
            assert principal is not None  # every route that reaches a model identifies first
            shape.policy = policy = gate.admit(principal, group, policy_endpoint or endpoint, tracker, call.work)
            decision = policy.decision
        else:
            decision = None
        # Limits and budgets for the deployments policy allows. Without accounting (tracker None), or when the
        # counters answer at once (in process, or from Redis leases), no coroutine is made for the limits;
        # without accounting none for the audit's durability either.
        extra: Sequence[Header] = ()
        if tracker is not None:
            if chat is not None and chat.service_tier is not None:
                tracker.tier = chat.service_tier  # priced at that tier where the deployment declares it
            if decision is None or decision.deployments.issuperset(group.position):  # `_allowed`'s usual case
                deployments = group.deployments
            else:
                deployments = _allowed(group, shape)
            headers = tracker.admit_at_once(group, deployments, max_output)
            if headers is None:  # shared counters (Redis), or a dropped in-process counter read back from the store
                extra = await _admit(tracker, group, shape, max_output)
            else:
                extra = headers
                ticket = tracker.ticket
                if ticket is not None and ticket.skip:
                    _exclude_skipped(tracker, shape)
        walked: list[Attempt] = []
        if tracker is not None:
            tracker.walked = walked  # what the walk got is charged even if the call ends during it
            limiter = tracker.acc.limiter
            if limiter is not None and limiter.rules.deployments:
                # A deployment the call fails over to is admitted on its own rate limits before it is called.
                shape.gate = AttemptGate(tracker, max_output)
        try:
            served = await self.router.route(
                group,
                shape,
                functools.partial(build, parsed),
                read,
                forward_usage=forward_usage,
                request_id=request_id,
                attempts=walked,
            )
        except ApiError as err:
            pinned = getattr(shape.policy, "pinned", None)
            if pinned is not None and pinned.removed and _no_deployment(err):  # the pin kept it from failing over
                raise pin_refusal(err, pinned, group.name) from None
            if output_param is not None and err.body.code == "invalid_value" and err.body.param in _OUTPUT:
                message = err.body.message.replace(err.body.param, output_param, 1)
                raise bad_request(message, param=output_param, code="invalid_value") from None
            raise
        if dropped:  # fields the front door's own translation dropped, beside those the adapter did
            served.dropped = sorted({*dropped, *(served.dropped or ())})
        call.served = served
        if tracker is None:
            return served, served_headers(call.request_id, served)
        # From here on the call is charged, whatever happens to the answer; it waits until its start is
        # on the audit trail (the future itself awaited: no coroutine per call).
        tracker.served = served
        durable = tracker.durable
        if durable is not None:
            try:
                await durable
            except BaseException:
                _abandon(served)
                raise
        return served, [*served_headers(call.request_id, served), *extra]


# The client's trace context is kept on the call's record (the call log, the export queue) only up to these
# sizes: a head may carry 64 KiB of each, which every record would have held. A traceparent is 55 characters
# (W3C, version 00; room for a later version's extra fields); a longer tracestate need not be propagated.
MAX_TRACEPARENT = 256
MAX_TRACESTATE = 512


def _trace_context(scope: Scope) -> tuple[bytes | None, bytes | None]:
    """The client's traceparent and tracestate, each dropped when longer than its bound (a traceparent
    that long is no trace to join; a tracestate that long is not propagated: otel_pipeline.py)."""
    parent, state = header(scope, b"traceparent"), header(scope, b"tracestate")
    if parent is not None and len(parent) > MAX_TRACEPARENT:
        parent = state = None
    if state is not None and len(state) > MAX_TRACESTATE:
        state = None
    return parent, state


def begin_call(
    call: Call, accounting: Accounting | None, endpoint: str, body: bytes, group: GroupRuntime, request: Any
) -> CallTracker | None:
    """Start accounting for a call (None when nothing is configured); the gateway finishes it on errors."""
    if accounting is None:
        return None
    assert call.principal is not None  # every route that reaches a model identifies first
    # None when nothing is configured (`begin` asks, so `enabled` is asked once a call).
    tracker = accounting.begin(call.request_id.decode(), endpoint, call.principal, body, group.name, request)
    if tracker is None:
        return None
    if accounting.trace_context:  # only with telemetry on (docs/telemetry.md)
        tracker.traceparent, tracker.tracestate = _trace_context(call.scope)
    call.tracker = tracker
    return tracker


async def _admit(
    tracker: CallTracker | None, group: GroupRuntime, shape: RequestShape, max_output: int | None
) -> Sequence[Header]:
    """Limits and budgets when `CallTracker.admit_at_once` answered None (shared counters, or in-process ones
    the store reads a dropped counter back into: metering/budget_bound.py)."""
    if tracker is None:
        return ()
    headers = await tracker.admit_awaited(group, _allowed(group, shape), max_output)
    _exclude_skipped(tracker, shape)
    return headers


def _allowed(group: GroupRuntime, shape: RequestShape) -> list[DeploymentRuntime]:
    """The group's deployments policy allows, in the group's order (not to be changed: when policy
    allows them all, the usual case, this is the group's own list, not a copy made per call)."""
    decision = getattr(shape.policy, "decision", None)
    if decision is None or decision.deployments.issuperset(group.position):  # position: every one's name
        return group.deployments
    return [d for d in group.deployments if d.name in decision.deployments]


def _exclude_skipped(tracker: CallTracker, shape: RequestShape) -> None:
    """Planning passes over the deployments the limiter found at their own rate limit."""
    skip = getattr(tracker.ticket, "skip", None)
    if skip:
        limited = dict.fromkeys(skip, "deployment rate limit reached")
        shape.exclude = {**limited, **shape.exclude} if shape.exclude else limited


def _no_deployment(err: ApiError) -> bool:
    """Whether routing found no deployment to serve the call (every one declined, or none could be
    tried), rather than an error of the request itself."""
    return isinstance(err, AllDeclined) or err.body.code in ("all_deployments_unavailable", "unsupported_capability")


def _abandon(served: Served) -> None:
    """The call's start could not be made durable: the client gets no answer, and a streamed upstream
    call is closed, not leaked."""
    if served.stream is not None:
        served.stream.close()


def finish_unary(call: Call, served: Served, sent: bytes) -> None:
    """Account a unary answer about to be sent: before the send, so its usage row is on local disk
    (metering/spool.py) before the client can have the answer."""
    tracker = call.tracker
    if tracker is not None:
        if tracker.capture is not None:
            tracker.capture.add(sent)
        # The answer's hash goes where the request's does (Accounting.begin: the call's record and the
        # audit trail); a tracker without one (metrics alone) makes no record to put it in.
        digest = hashlib.sha256(sent).hexdigest() if tracker.request_sha256 else None
        tracker.finish_produced(served, served.status, "ok", response_sha256=digest)


def finish_refused(call: Call, served: Served, err: ApiError, outcome: str) -> None:
    """Account an upstream answer the gateway turned into an error (a client error passed through, an
    answer that could not be translated). One the upstream produced (2xx) is charged the usage it
    reported, as any answered call (finish_produced), not an estimate of its prompt alone."""
    if call.tracker is not None:
        call.tracker.finish_produced(served, err.status, outcome, error_code=err.body.code)


StreamDone = Callable[[str, Any, "float | None"], None]


def stream_finisher(call: Call, served: Served) -> StreamDone | None:
    """What the stream sender calls once the stream is over (or abandoned): the call's record."""
    tracker = call.tracker
    if tracker is None:
        return None
    relay = served.stream
    assert relay is not None

    def done(outcome: str, digest: Any, first_byte_ms: float | None) -> None:
        if outcome == "ok" and (relay.error or not relay.done):
            outcome = "stream_error"
        sha256 = digest.hexdigest() if digest is not None else None  # None: nothing reads it (send_stream)
        tracker.finish_produced(served, 200, outcome, response_sha256=sha256, first_byte_ms=first_byte_ms)

    return done


class _Narrowing(msgspec.Struct):
    deployments: list[str] | None = None


class _Extension(msgspec.Struct):
    """The `multihome` body extension (`extra_body={"multihome": {...}}` in the OpenAI SDK)."""

    route: _Narrowing | None = None


_extension = Decoder(_Extension)  # reads a field decode_views only skipped: nesting is a 400 too


def narrowing(scope: Scope, raw: dict[str, msgspec.Raw], group: GroupRuntime) -> frozenset[str] | None:
    """Deployments the client restricted this call to: header `x-multihome-deployments: a,b` or
    body `{"multihome": {"route": {"deployments": [...]}}}`. Only a subset of the group's own
    deployments is allowed, so a client can narrow routing but never widen it."""
    names: list[str] | None = None
    ext = raw.pop("multihome", None)  # never forwarded upstream
    if ext is not None:
        try:
            route = _extension.decode(ext).route
        except msgspec.DecodeError as exc:
            raise ApiError(400, f"Invalid 'multihome' extension: {echo_quoted(str(exc))}.", param="multihome") from None
        names = route.deployments if route else None
    param = "multihome.route.deployments"
    value = single(scope, b"x-multihome-deployments")
    if value is not None:  # the header wins over the body's list
        names = [n.strip() for n in value.decode(errors="replace").split(",") if n.strip()]
        param = "x-multihome-deployments"
    if names is None:
        return None
    known = {d.name for d in group.deployments}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ApiError(
            400,
            f"Cannot narrow model '{group.name}' to {echo(', '.join(unknown)) or 'nothing'}: a request may only pick among "
            f"the group's deployments ({', '.join(sorted(known))}).",
            param=param,
            code="invalid_route_narrowing",
        )
    return frozenset(names)
