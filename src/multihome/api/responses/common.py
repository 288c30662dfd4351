"""What the Responses and Conversations routes share: path ids, list queries with OpenAI's cursor
pagination, JSON answers, the store's failures as API errors, and a turn run through the pipeline
(a create's, or a background run's)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote

import msgspec

from ...crypto import CryptoError, KmsError
from ...providers.base import NativeResponses, UpstreamRequest, native_responses
from ...routing.attempts import Served
from ...routing.catalog import DeploymentRuntime
from ...schema import estimate
from ...schema.chat import ParsedChat
from ...schema.errors import ApiError, bad_request, echo, no_retry
from ...schema.responses import INCLUDABLE
from ...schema.tool_names import MAX_NAME
from ...state import StateStore
from ...state.pairs import BrokenPair
from ...storage.errors import Conflict, UnreadableRow, unavailable
from ..asgi import JSON, ClientGone, Header, Receive, Send, client_gone
from ..drain import SseCut
from ..kms_errors import kms_api_error
from ..openai.chat import chat_request, chat_response
from ..pipeline import Call, Pipeline
from ..render import send_json
from .native import NativeTurn

T = TypeVar("T")
_encode = msgspec.json.encode


def segments(call: Call) -> list[str]:
    """The path's segments after `/v1/`: ["responses", "resp_..", "input_items"], each percent-decoded
    on its own (the route table matched the raw path, so an encoded `/` stays inside its segment)."""
    raw: bytes = call.scope.get("raw_path") or call.scope["path"].encode()
    return [unquote(part.decode("latin-1")) for part in raw.split(b"?", 1)[0].split(b"/")[2:]]


def query(call: Call) -> dict[str, list[str]]:
    return parse_qs(call.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)


def check_include(raw: dict[str, list[str]]) -> None:
    """A read's `include` (`include[]`, as the SDKs write an array): OpenAI's values are accepted (nothing
    here is left out that one would add); another is a 400 naming it, as OpenAI answers and as a create's is
    (was ignored: a client's typo looked like a value that had worked)."""
    for key in ("include", "include[]"):
        for i, name in enumerate(raw.get(key, ())):
            if name not in INCLUDABLE:
                raise bad_request(
                    f"include[{i}] '{echo(name)}' is not one of: {', '.join(sorted(INCLUDABLE))}.",
                    param=f"include[{i}]",
                )


def checked_include(call: Call) -> None:
    """`check_include` of the call's query (nothing read when there is none)."""
    if call.scope.get("query_string"):
        check_include(query(call))


def tenant(call: Call) -> str:
    assert call.principal is not None  # these routes identify first
    return call.principal.tenant


def need_state(state: StateStore | None, what: str) -> StateStore:
    if state is None:
        raise bad_request(
            f"{what} needs a database: this gateway has no storage configured (storage.url, docs/storage.md).",
            code="storage_not_configured",
        )
    return state


async def stored(op: Awaitable[T]) -> T:
    """A store operation; a KMS or a database that cannot be reached is a 503 naming it, a KMS that refuses
    one too (naming the KMS, never its own answer: key ids, versions, an AWS account are the audit trail's);
    a stored row that cannot be read or does not open a 409 `unreadable_row` (docs/storage.md)."""
    try:
        return await op
    except BrokenPair as exc:  # a bug, never the client's doing: nothing was written
        raise ApiError(
            500,
            f"The gateway refused to store a tool call without its result ({exc}); it has been logged.",
            type="server_error",
            code="state_invariant",
        ) from None
    except Conflict:
        # The one constraint a client can hit: an item id given twice to one conversation.
        raise bad_request(
            "An item with one of these ids is already in the conversation (ids are unique per conversation); "
            "send new items without an 'id' and the gateway assigns one.",
            param="items",
            code="duplicate_item_id",
        ) from None
    except KmsError as exc:  # the 503 of every other path (api/kms_errors.py): names the KMS, not what it said
        raise kms_api_error(exc) from exc  # the cause: the gateway words it as a read on a GET (kms_errors.py)
    except UnreadableRow as exc:  # a stored row the gateway cannot read (storage/row_reads.py)
        raise ApiError(409, f"{exc}.", code="unreadable_row", headers=no_retry()) from None
    except CryptoError as exc:  # sealed for another row, cut short, its data key gone: the row, not the call
        raise ApiError(
            409,
            f"A stored record this request needs cannot be opened ({type(exc).__name__}); it stays unreadable "
            "until an operator restores it (docs/storage.md).",
            code="unreadable_row",
            headers=no_retry(),  # the row stays as it is: a retry reads it again
        ) from None
    except Exception as exc:
        if not unavailable(exc):
            raise
        # The database cannot take the work now (its file cannot be opened or written, the disk is full, a
        # lock held too long, PostgreSQL unreachable): a 503 the client retries, never a hang or a bare 500.
        raise ApiError(
            503,
            "The gateway's state database cannot be used right now; nothing was stored. Retry shortly.",
            type="server_error",
            code="storage_unavailable",
            headers={"retry-after": "5"},  # as the KMS's 503 (api/kms_errors.py)
        ) from None


OUTAGES = frozenset({"storage_unavailable", "kms_unavailable"})  # `stored`'s 503s: the store or the KMS, now


def outage(err: ApiError) -> bool:
    """Whether `err` says the state database or the KMS could not be used just now (`stored`'s 503s), not
    that anything is wrong with the turn: a background run raises it, so its job is tried again after a
    backoff (state/worker.py), rather than ending its response `failed` for an outage a retry outlives."""
    return err.status == 503 and err.body.code in OUTAGES


async def answer(call: Call, send: Send, value: Any, status: int = 200) -> None:
    await send_json(call, send, status, _encode(value), [JSON, (b"x-request-id", call.request_id)])


class ListQuery(msgspec.Struct):
    after: str | None = None
    before: str | None = None  # older clients' cursor (the SDK no longer sends it)
    limit: int = 20
    desc: bool = True


def _cursor(value: str, param: str) -> str | None:
    if not value.isprintable():  # no item id has a control character (PostgreSQL's text refuses a NUL)
        raise bad_request(f"'{param}' must be an item id.", param=param)
    return value or None


def list_query(call: Call, *, include: bool = False) -> ListQuery:
    """`after`, `limit` (1..100, default 20), `order` (`asc`/`desc`, default `desc`); with `include`, OpenAI's
    `include` values are accepted (`check_include`)."""
    raw = query(call)
    if include:
        check_include(raw)
    out = ListQuery()
    if "after" in raw:
        out.after = _cursor(raw["after"][-1], "after")
    if "before" in raw:
        out.before = _cursor(raw["before"][-1], "before")
    if "limit" in raw:
        value = raw["limit"][-1]
        # ASCII digits only: str.isdigit() is true of '²' and '①' too, which int() refuses (was a 500).
        if not (value.isascii() and value.isdigit() and len(value) <= 3) or not 1 <= int(value) <= 100:
            raise bad_request("'limit' must be an integer between 1 and 100.", param="limit")
        out.limit = int(value)
    if "order" in raw:
        order = raw["order"][-1]
        if order not in ("asc", "desc"):
            raise bad_request("'order' must be 'asc' or 'desc'.", param="order")
        out.desc = order == "desc"
    return out


def page(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


def unknown_cursor(value: str, param: str) -> ApiError:
    """A cursor that names no item of the list: a 400 naming it, not an empty page a client would
    take for the end of the list."""
    return bad_request(
        f"No item found with id '{echo(value)}' in this list: '{param}' must be the id of one of its items "
        "(the last_id of the page before).",
        param=param,
    )


def _position(ids: list[str], value: str, param: str) -> int:
    try:
        return ids.index(value)
    except ValueError:
        raise unknown_cursor(value, param) from None


def page_of(items: list[dict[str, Any]], query: ListQuery) -> dict[str, Any]:
    """A page of a list held in full (a response's own input items): after `after`, and before `before`
    (the page that ends just before that item)."""
    ordered = list(reversed(items)) if query.desc else items
    ids = [i["id"] for i in ordered]
    if query.after is not None:
        ordered = ordered[_position(ids, query.after, "after") + 1 :]
    elif query.before is not None:
        end = _position(ids, query.before, "before")
        start = max(0, end - query.limit)
        return page(ordered[start:end], start > 0)
    return page(ordered[: query.limit], len(ordered) > query.limit)


def native_upstream(dep: DeploymentRuntime) -> NativeResponses | None:
    """The deployment's adapter when a Responses call goes to it natively (docs/responses.md "Native upstreams")."""
    return native_responses(dep.adapter) if dep.responses_native else None


def _long_name_refused(param: str, deployments: Sequence[str]) -> ApiError:
    """A Responses function name of 65 to 128 characters bound only for deployments reached through chat
    completions, which take 64 at most (schema/tool_names.py): refused before anything is sent. (Agent
    steps, with MCP or memory tools, and background turns are always sent as chat completions.)"""
    names = ", ".join(f"'{name}'" for name in deployments)
    which = f"deployment {names} is" if len(deployments) == 1 else f"deployments {names} are"
    return bad_request(
        f"Invalid '{param}': a function name longer than {MAX_NAME} characters is accepted only where a turn "
        f"is sent natively as a Responses call; {which} sent this turn as a chat completion, which allows at "
        f"most {MAX_NAME}. Shorten the name, or use a model served natively (docs/responses.md).",
        param=param,
        code="string_above_max_length",
    )


def _long_name_exclusions(
    pipeline: Pipeline, parsed: ParsedChat, native: Callable[[DeploymentRuntime], object]
) -> dict[str, str] | None:
    """The deployments a turn with a function name over chat's 64 characters cannot go to (those it would
    reach through chat completions), for planning to pass over: a later one that takes it natively serves
    it. None when every name fits; the 400 when no deployment of the model (or its fallbacks) can."""
    param = parsed.long_name
    if param is None:
        return None
    groups = pipeline.catalog.groups
    group = groups.get(parsed.request.model)
    if group is None:
        return None  # the pipeline's 404
    chain = [group, *(groups[name] for name in group.policy.fallback_groups if name in groups)]
    through_chat = list(dict.fromkeys(d.name for g in chain for d in g.deployments if native(d) is None))
    if len(through_chat) == len({d.name for g in chain for d in g.deployments}):
        raise _long_name_refused(param, through_chat)
    why = f"reached through chat completions, which take function names of at most {MAX_NAME} characters"
    return dict.fromkeys(through_chat, f"{why} ({param})")


async def run_turn(
    pipeline: Pipeline,
    call: Call,
    body: bytes,
    canonical: ParsedChat,
    dropped: list[str],
    native: NativeTurn | None = None,
) -> tuple[Served, list[Header]]:
    """A Responses turn through the one pipeline: to a deployment that speaks the Responses API natively
    when `native` carries the turn, else (and on every other deployment) translated to the canonical
    chat request. The deployment decides the wire form, so a failover may cross from one to the other."""

    def upstream_of(dep: DeploymentRuntime) -> NativeResponses | None:
        return native_upstream(dep) if native is not None else None

    async def build(parsed: ParsedChat, dep: DeploymentRuntime) -> UpstreamRequest:
        adapter = upstream_of(dep)
        if adapter is not None:
            assert native is not None
            return await adapter.responses_request(native.raw(), dep.upstream_model)
        if parsed.long_name is not None:  # (planning passed over it: _long_name_exclusions)
            raise _long_name_refused(parsed.long_name, [dep.name])
        upstream = await chat_request(parsed, dep)
        if dropped:  # fields this translation dropped, beside those the adapter did
            upstream.dropped = sorted({*dropped, *upstream.dropped})
        return upstream

    def read(dep: DeploymentRuntime, answer: bytes, headers: Any) -> bytes:
        return answer if upstream_of(dep) is not None else chat_response(dep, answer, headers)

    return await pipeline.run(
        call,
        "responses",
        body,
        canonical,
        build,
        read,
        chat=canonical.request,
        max_output=estimate.output_tokens(canonical.request),
        forward_usage=True,  # the usage-only last chunk must reach the converter
        output_param="max_output_tokens",
        exclude=_long_name_exclusions(pipeline, canonical, upstream_of),
    )


_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


async def send_sse(
    call: Call,
    receive: Receive,
    send: Send,
    events: AsyncIterator[bytes],
    headers: Sequence[Header] = (),
    closing: Callable[[str, str], bytes] | None = None,
    stops_itself: bool = False,
) -> None:
    """An SSE answer from `events`; a client that goes away ends it (a background response runs on).
    `stops_itself` (a foreground agent run): a client that goes away is told to the run (asgi.client_gone),
    which is cancelled only while it says so (a model step in flight) and otherwise stops at its next step
    or tool call, where what it did is whole; its events are read on to that end, sent nowhere. With `closing`, the drain deadline
    (api/drain.py), or an ApiError `events` raises once the answer has begun (a store it cannot read), ends
    it with `closing(reason, code)`'s events and a proper end of the body: without, the answer was cut off
    mid-body and the client's read failed on it, with no error it could read (a resumable stream did not
    say where to resume)."""
    call.status = 200
    task = asyncio.current_task()
    assert task is not None
    gone = asyncio.Event()
    cut = SseCut(task) if closing is not None else None
    if cut is not None:
        call.stream = cut

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()
        if stops_itself:
            client_gone(call.scope, task)
        else:
            task.cancel()

    watcher = asyncio.create_task(watch())
    extra = [h for h in headers if h[0] != b"x-request-id"]
    try:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_SSE, (b"x-request-id", call.request_id), *extra],
            }
        )
        async for piece in events:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            if cut is not None and any(kind in piece for kind in _TERMINAL):
                cut.done = True  # the drain deadline cuts nothing after this
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        if gone.is_set():
            task.uncancel()
            if stops_itself:  # cancelled outside the run (in a send): it stops itself, its events sent nowhere
                async for _ in events:
                    pass
            raise ClientGone() from None
        if cut is None or closing is None or not cut.took(task):
            raise
        await _closed(send, closing(cut.reason or "", cut.code))
    except ApiError as err:
        if closing is None:
            raise
        # After the terminal event, no error event: the body is only ended.
        await _closed(
            send, b"" if cut is not None and cut.done else closing(err.body.message, err.body.code or "server_error")
        )
    except OSError:
        raise ClientGone() from None
    finally:
        watcher.cancel()
        with contextlib.suppress(BaseException):
            await events.aclose()  # type: ignore[attr-defined]


# The events that end a Responses stream: an SSE event's data is JSON, so this byte string (its line
# break unescaped) is only ever the event's own `event:` line.
_TERMINAL = (b"event: response.completed\n", b"event: response.incomplete\n", b"event: response.failed\n")


async def _closed(send: Send, last: bytes) -> None:
    """The last events of an SSE answer, then the end of its body."""
    with contextlib.suppress(Exception):  # the client may be gone too: nothing more to tell it
        await send({"type": "http.response.body", "body": last, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def abandon(call: Call) -> None:
    """A run that does not make its response final records no call: the turn's one usage row, ledger
    accrual and audit completion (all keyed by the turn's request id, the first write winning) belong
    to the run that does. Its budget reservation is released."""
    tracker = call.tracker
    if tracker is None or tracker.finished:
        return
    tracker.finished = True
    limiter = tracker.acc.limiter
    if limiter is not None:
        limiter.release(tracker.request_id)
