"""Memory's embeddings from a routed deployment (config `memory.embeddings.model`, docs/memory.md "Embeddings").

A memory write or search whose namespace is embedded by a routed model makes its embeddings as calls of
the caller through the one pipeline, exactly like a `POST /v1/embeddings` of theirs would be: policy
and entitlements, budgets and rate limits, the tenant's `memory_embedding` stateful-work pins (only
pinned deployments embed; `stateful_pin_unavailable` naming the pin when they cannot), planning and
failover, metering and the audit trail. Usage rows and call events say `endpoint: memory_embeddings`,
under the request id `<memory call's request id>-emb` (`-emb<n>` for the n-th batch); policy sees the
call as the `embeddings` endpoint (a key's endpoint scope needs it).

One namespace, one model: a namespace's `Space` names the upstream model (and dimension) its vectors
came from, and its later embeddings are narrowed to the group's deployments of that model (as the
`multihome.route.deployments` extension narrows a client's call), so failover never mixes models.
A write's records go in batches of at most `memory.embeddings.max_batch` texts (96 by default: the
tightest multi-text limit among the clouds, Cohere on Bedrock's; 1 for Amazon Titan) and `BATCH_CHARS`
characters (OpenAI's limit is 300,000 tokens per request) per upstream request, the batches after the
first `CONCURRENT_BATCHES` at a time; Vertex's one-instance models are fanned out by their adapter. Vectors are
L2-normalised here (not every model returns unit vectors), so the index's dot product is the cosine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from ..accounting.record import Usage
from ..accounting.tracker import finish_failed
from ..config.memory import MemoryEmbeddingsConfig
from ..policy.pins import MEMORY_EMBEDDING
from ..routing.attempts import Served
from ..schema import estimate
from ..schema.embeddings import EmbeddingsRequest, parse_embeddings
from ..schema.errors import ApiError
from ..state.memory.embedder import Caller, Space, SpaceUnavailable
from .openai.embeddings import embeddings_request, embeddings_response
from .openai.errors import upstream_client_error
from .pipeline import Call, Pipeline, finish_refused, finish_unary
from .responses.common import abandon

if TYPE_CHECKING:  # numpy loads on the first memory use (state/memory/numeric.py), not at gateway start
    import numpy as np

ENDPOINT = "memory_embeddings"  # usage rows, metrics and call events
POLICY_ENDPOINT = "embeddings"  # what policy and a key's endpoint scope see
BATCH_CHARS = 400_000  # ~100,000 tokens: a third of OpenAI's per-request limit
CONCURRENT_BATCHES = 4


class _Vector(msgspec.Struct):
    index: int
    embedding: list[float]


class _Answer(msgspec.Struct):
    data: list[_Vector]


_answer = msgspec.json.Decoder(_Answer)


def batches(texts: list[str], max_texts: int, max_chars: int = BATCH_CHARS) -> list[list[str]]:
    """`texts` in order, cut into upstream requests of at most `max_texts` texts and `max_chars` characters
    (a text longer than `max_chars` goes alone: the upstream's own limit then decides)."""
    out: list[list[str]] = []
    cur: list[str] = []
    size = 0
    for text in texts:
        if cur and (len(cur) == max_texts or size + len(text) > max_chars):
            out.append(cur)
            cur, size = [], 0
        cur.append(text)
        size += len(text)
    if cur:
        out.append(cur)
    return out


class RoutedEmbeddings:
    """The `Routed` source of state/memory/embedder.py, over the gateway's pipeline."""

    def __init__(self, pipeline: Pipeline, config: MemoryEmbeddingsConfig) -> None:
        assert config.model is not None
        self.pipeline = pipeline
        self.group = config.model
        self.dimensions = config.dimensions
        self.max_batch = config.max_batch

    async def embed(
        self, texts: list[str], space: Space | None, caller: Caller, *, purpose: str
    ) -> tuple[np.ndarray, Space]:
        pieces = batches(texts, self.max_batch)
        many = len(pieces) > 1
        rid = caller.request_id + "-emb"
        first, made = await self._one(pieces[0], space, caller, rid + ("1" if many else ""), purpose)
        out = [first]
        if many:  # the first batch fixed the space (a new namespace's): the others are made in it
            gate = asyncio.Semaphore(CONCURRENT_BATCHES)

            async def rest(i: int, piece: list[str]) -> np.ndarray:
                async with gate:
                    return (await self._one(piece, made, caller, f"{rid}{i}", purpose))[0]

            out += await asyncio.gather(*(rest(i, p) for i, p in enumerate(pieces[1:], start=2)))
        from ..state.memory.numeric import np

        return np.vstack(out), made

    def _narrowed(self, space: Space | None) -> list[str] | None:
        """The group's deployments that embed in `space` (None: any); refused when there is none."""
        group = self.pipeline.catalog.groups.get(self.group)
        if group is None:  # removed by a config reload that load checks would have refused: say so anyway
            raise ApiError(
                503,
                f"Memory cannot be embedded: model group '{self.group}' (memory.embeddings.model) is not configured.",
                type="server_error",
                code="memory_unavailable",
            )
        if space is None:
            return None
        names = [d.name for d in group.deployments if d.upstream_model == space.model]
        if not names:
            raise SpaceUnavailable(
                space,
                f"model group '{self.group}' (memory.embeddings.model) has no deployment of it now "
                f"(it has: {', '.join(sorted({d.upstream_model for d in group.deployments}))})",
            )
        return names

    async def _one(
        self, texts: list[str], space: Space | None, caller: Caller, request_id: str, purpose: str
    ) -> tuple[np.ndarray, Space]:
        body: dict[str, Any] = {"model": self.group, "input": texts, "encoding_format": "float"}
        if self.dimensions is not None:
            body["dimensions"] = self.dimensions
        names = self._narrowed(space)
        if names is not None:
            body["multihome"] = {"route": {"deployments": names}}
        raw = msgspec.json.encode(body)
        parsed = parse_embeddings(raw)
        call = Call(_scope(caller.headers), request_id.encode())
        call.principal = caller.principal
        call.work = MEMORY_EMBEDDING  # stateful work: the tenant's pins hold it (policy/pins.py)
        try:
            served, _ = await self.pipeline.run(
                call,
                ENDPOINT,
                raw,
                parsed,
                embeddings_request,
                embeddings_response,
                max_output=0,
                policy_endpoint=POLICY_ENDPOINT,
            )
        except ApiError as err:
            finish_failed(call.tracker, err)
            raise _retold(err, self.group, purpose) from None
        if served.status >= 400:
            refused = upstream_client_error(served)
            finish_refused(call, served, refused, "client_error")
            raise _retold(refused, self.group, purpose) from None
        try:
            vectors = _vectors(served, len(texts))
        except ValueError as exc:
            bad = ApiError(502, f"Deployment {served.deployment.name} answered {exc}.", type="server_error")
            finish_failed(call.tracker, bad)
            raise _retold(bad, self.group, purpose) from None
        if caller.recorded is not None and await caller.recorded(request_id):
            # An earlier run of this background run made and recorded this very embedding, then died before its
            # checkpoint: its row stands, so this one is counted against the budgets once, as it is billed once.
            abandon(call)
        else:
            finish_unary(call, served, served.body)
            if caller.mark is not None:  # (no await between: one settlement batch with the call's counts)
                caller.mark(request_id)
        if caller.charged is not None:
            # What the meter charged the call (its unserved answers too), read as the meter read it.
            tracker = call.tracker
            charges = (
                tracker.charges(served)
                if tracker is not None
                else [(served.deployment.name, _usage(served, parsed.request))]
            )
            for deployment, usage in charges:
                caller.charged(deployment, usage)
        made = Space(served.deployment.upstream_model, vectors.shape[1])
        if space is not None and vectors.shape[1] != space.dim:
            raise SpaceUnavailable(
                space, f"deployment {served.deployment.name} now answers with {vectors.shape[1]} dimensions"
            )
        return vectors, made


def _usage(served: Served, request: EmbeddingsRequest) -> Usage:
    """The usage of an embedding call nothing accounts (no tracker: no metering configured): the tokens the
    upstream counted, or (none counted: the Gemini API's batch embeddings) the estimate of its input."""
    counted = served.peek.usage if served.peek is not None else None
    if counted is not None and (counted.prompt_tokens or counted.completion_tokens):
        return Usage(max(counted.prompt_tokens, 0), max(counted.completion_tokens, 0))
    return Usage(estimate.input_tokens(request), 0, 0, estimated=True)


def _vectors(served: Served, count: int) -> np.ndarray:
    """The answer's vectors in input order, L2-normalised float32; ValueError if it is not `count` of one size."""
    try:
        data = _answer.decode(served.body).data
    except msgspec.DecodeError:
        raise ValueError("with a body that is not an embeddings list") from None
    if len(data) != count or sorted(v.index for v in data) != list(range(count)):
        raise ValueError(f"with {len(data)} embeddings for {count} inputs")
    dims = {len(v.embedding) for v in data}
    if len(dims) != 1 or 0 in dims:
        raise ValueError(f"with embeddings of sizes {sorted(dims)}")
    from ..state.memory.numeric import np

    # In float64 and scaled by each row's largest value before the norm: a broken upstream's huge values
    # (or values whose squares overflow) still make a unit vector, never NaN or zeros once in float32.
    out = np.empty((count, dims.pop()), dtype=np.float64)
    for v in data:
        out[v.index] = v.embedding
    if not np.isfinite(out).all():
        raise ValueError("with embedding values that are not finite numbers")
    peak = np.max(np.abs(out), axis=1, keepdims=True)
    out /= np.where(peak > 0, peak, 1)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.where(norms > 0, norms, 1)).astype(np.float32)


def _retold(err: ApiError, group: str, purpose: str) -> ApiError:
    """`err` (its status, type and code stay: a pin's refusal is still `stateful_pin_unavailable`) with
    what it stopped: nothing was written, or the search did not run."""
    what = "the records were not written" if purpose == "records" else "the search did not run"
    err.body = msgspec.structs.replace(
        err.body, message=f"Memory could not be embedded by model group '{group}', so {what}: {err.body.message}"
    )
    return err


def caller_of(call: Call, tenant: str) -> Caller:
    """The memory call's caller, for routed embeddings: its principal, as a caller of `tenant` (an org-admin
    naming a tenant's memory with `?tenant=` makes that tenant's embeddings: its pins, its bill)."""
    principal = call.principal
    assert principal is not None  # memory routes identify first
    if principal.tenant != tenant:
        principal = msgspec.structs.replace(principal, tenant=tenant, team=None)
    trace = {}
    for name, value in call.scope.get("headers", ()):
        if name in (b"traceparent", b"tracestate"):
            trace[name.decode()] = value.decode("latin-1")
    return Caller(principal, call.request_id.decode(), trace or None)


def space_refusal(exc: SpaceUnavailable) -> ApiError:
    """A namespace whose embedding model cannot be had now: a 409 that names it (docs/memory.md)."""
    return ApiError(
        409,
        f"This memory namespace's vectors were made by embedding model {exc}. Its records and queries can "
        "only be embedded by that model (vectors of two models cannot be compared): restore a deployment of "
        "it, or move the namespace to the configured model (`multihome memory reembed`, docs/memory.md).",
        code="memory_embedding_model_unavailable",
    )


def _scope(headers: Mapping[str, str] | None) -> dict[str, Any]:
    """A scope for the embedding calls: the client's trace context only (no other header of the memory
    call, such as a route narrowing meant for another model, applies to them)."""
    pairs = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    return {"type": "http", "headers": pairs, "path": "/v1/memory", "query_string": b""}
