"""`/v1/responses`: create a response (unary or streamed) through the same pipeline as a chat
completion, and retrieve, delete, list the input items of, or cancel a stored one.

A create rebuilds the turn's context from the gateway's own store (the `previous_response_id`
chain, or the conversation's items), translates it to the canonical chat request and runs it
through `Pipeline.run` exactly like `/v1/chat/completions` (policy, entitlements, budgets,
failover, metering, audit); any provider the policy allows may serve any turn. The answer is stored
(and appended to its conversation) before the client gets it: the unary body, or the stream's
terminal event. Reads, continuations and deletes name the caller's tenant: another tenant's
response is not found (404), never forbidden, so ids leak nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any, cast

import msgspec

from ...policy.pins import STORED_RESPONSE
from ...routing.stream_relay import StreamRelay
from ...schema.errors import ApiError, bad_request, echo
from ...schema.responses import CreateResponse, parse_create, runs_tools
from ...state import ItemPage, StateStore, StoredResponse
from ...state.idempotency import IdempotencyKeys
from ...state.idempotency import held as held_key
from ...tools.resolver import McpResolver
from ...tools.servers import McpServerStore
from ...tools.toolbox import Toolbox
from ..asgi import CANCEL_ON_HANG_UP, JSON, Receive, Send, hang_up_cancels, header, read_body
from ..big_bodies import OFF_LOOP_OVER
from ..openai.errors import OPENAI, upstream_client_error
from ..pipeline import Call, Pipeline, finish_refused, finish_unary, stream_finisher
from ..read_only import STORED_STATE, may_write
from ..render import send_failure, send_json, send_stream
from .agent import AgentRun, AgentSetup, approved
from .background import Background, starting_after
from .bounded import refuse_turn
from .common import (
    answer,
    check_include,
    list_query,
    native_upstream,
    need_state,
    page_of,
    query,
    run_turn,
    segments,
    send_sse,
    stored,
    tenant,
)
from .held_context import HeldContexts
from .idempotent import HEADER as IDEMPOTENCY_KEY
from .idempotent import once
from .items import (
    Item,
    refuse_duplicate_ids,
    refuse_unanswered,
    stored_items,
)
from .native import NativeStream, NativeTurn, from_response
from .stream import ResponsesRelay, ResponsesStream
from .tenant_share import TenantShare
from .thinking import ThinkingKeys
from .translate import Shell, as_published, from_completion, open_thinking, to_canonical
from .turn_append import append_turn, checked_end

log = logging.getLogger("multihome.responses")
_encode = msgspec.json.encode
MAX_ID = 40  # longer ids were never issued here
_NOT_APPENDED = ("failed", "cancelled")  # a turn kept for retrieval that its conversation goes on without


def not_found(response_id: str) -> ApiError:
    return ApiError(404, f"No response found with id '{echo(response_id)}'.")


def conversation_not_found(conversation_id: str) -> ApiError:
    return ApiError(404, f"Conversation with id '{echo(conversation_id)}' not found.", param="conversation")


def streams(raw: dict[str, list[str]]) -> bool:
    """Whether a retrieve's query asks for the response's stream (`stream=true`)."""
    return raw.get("stream", ["false"])[-1].lower() == "true"


class ResponsesDoor:
    def __init__(
        self,
        pipeline: Pipeline,
        state: StateStore | None,
        background: Background | None = None,
        agent: AgentSetup | None = None,
    ) -> None:
        self.agent = agent or AgentSetup()
        self.limits = self.agent.limits
        self.pipeline = pipeline
        self.state = state  # None without storage: nothing is stored, nothing can be continued
        self.background = background  # background mode (api/responses/background.py); None without storage
        self._keys: IdempotencyKeys | None = None
        self.thinking = ThinkingKeys((lambda: state.keyring) if state is not None else None)
        self.held = HeldContexts()  # chains' contexts as chat messages, converted once per conversation
        # Foreground agent runs in progress on this replica, per tenant: each holds its connection and its MCP
        # sessions for up to max_run_s (background runs are shared out by the job queue instead).
        self.agent_runs = TenantShare(
            self.agent.config.max_foreground_per_tenant,
            "agent runs in progress",
            "responses.agent.max_foreground_per_tenant",
            "too_many_agent_runs",
            "Wait for some to finish, or create them with background: true, and retry.",
        )

    async def create(self, call: Call, receive: Receive, send: Send) -> None:
        key = header(call.scope, IDEMPOTENCY_KEY)
        if key is not None and self.state is not None:  # a database round trip only for a keyed request
            if self._keys is None:
                self._keys = IdempotencyKeys(self.state.engine, keyring=self.state.keyring)
            max_body = self.pipeline.max_body
            await once(
                call,
                receive,
                send,
                self._keys,
                key,
                "responses",
                "responses",
                max_body,
                self._create,
                self._replay,
                self.pipeline.bodies,
            )
            return
        await self._create(call, receive, send)

    async def _replay(self, call: Call, body: bytes, response_id: str) -> dict[str, Any] | None:
        """The stored response a retried create answers with (as it is now); None for a streamed create
        (its retry cannot be a JSON body) or one not stored."""
        if parse_create(body).stream or self.state is None:
            return None
        found = await stored(self.state.get_response(tenant(call), response_id))
        if found is None:
            return None
        if self.background is not None:
            found = await self.background.current(found)
        return as_published(found.response)

    async def _create(self, call: Call, receive: Receive, send: Send) -> None:
        body = await read_body(call.scope, receive, self.pipeline.max_body, self.pipeline.bodies)
        req = parse_create(body) if len(body) <= OFF_LOOP_OVER else await self.pipeline.bodies.parse(parse_create, body)
        if req.store:
            need_state(self.state, "Storing a response ('store': true)")
        who = tenant(call)
        thinking = self.thinking.of(who)
        shell = Shell(req, store=req.store if req.store is not None else self.state is not None, thinking=thinking)
        if call.principal is not None and (shell.store or req.background or req.conversation_id is not None):
            may_write(call.principal, STORED_STATE)
        chain, context, conv = await self._chain_context(who, req)
        new = stored_items(req.input)
        if conv is not None:  # a conversation's turn: its input must fit in it (its answer always does)
            assert req.conversation_id is not None and self.state is not None
            refuse_turn(self.state.bound, req.conversation_id, conv, new, len(body))
        end = checked_end(context, new, conv)  # where its items go if nothing changed meanwhile: its checks hold
        refuse_unanswered(context, new, conversation=req.conversation_id is not None)
        if req.conversation_id is not None and isinstance(req.input, list) and any(i.id for i in req.input):
            refuse_duplicate_ids(context, new, "input")  # only a client-given id can be one already used
        if runs_tools(req):
            await thinking.open(context, None)  # checked now (a 400 before any tool runs); the steps reuse them
            await thinking.open(new, "input")
            await self._agent_turn(call, receive, send, req, body, shell, context, new, end)
            return
        if any(item["type"] == "mcp_approval_response" for item in new):  # without the tool it was ignored
            approved(context, new, [], lambda label: False)  # a 400: not in the context, or its server not offered
        held = None
        if chain:  # a chain of plain turns: its context converted once (held_context.py)
            await open_thinking(req, thinking, context, new)  # opened once: to_canonical's pass finds them so
            held = self.held.request(req, chain, new, thinking)
        pool = self.pipeline.bodies if len(body) > OFF_LOOP_OVER else None
        canonical, dropped = held or await to_canonical(req, context, new, thinking=thinking, pool=pool)
        if req.background:  # checked like a foreground turn (a 400 or 404 now), then queued
            need_state(self.state, "Background mode ('background': true)")
            assert self.background is not None  # present whenever the state store is
            await self.background.create(call, receive, send, req, body, new)
            return
        if shell.store or req.conversation_id is not None or req.previous_response_id is not None:
            call.work = STORED_RESPONSE  # a turn that keeps or reads state is stateful work (policy/pins.py)
        await self._ready_to_seal(who, shell, req)
        turn = NativeTurn(body, req, context, new)
        # A client that hangs up while the upstream call is in flight ends it (the SDKs hang up at their timeout
        # and send the call again): nothing is stored before the answer is in. Once it is, the turn is stored
        # whole (and charged) whether the client stays or not; a stream's answer begins as it comes.
        hang_up_cancels(call.scope)
        served, headers = await run_turn(self.pipeline, call, body, canonical, dropped, turn)
        native = native_upstream(served.deployment) is not None
        if served.stream is None:
            call.scope[CANCEL_ON_HANG_UP] = False
        if served.stream is not None:
            converter = NativeStream(shell) if native else ResponsesStream(shell)

            async def keep(response: dict[str, Any]) -> bytes:
                try:
                    await self._keep(who, shell, req, new, response, end=end)
                except ApiError as err:
                    return converter.fail(err.body.message, err.body.code)
                except Exception:
                    log.exception("storing streamed response %s failed", shell.id)
                    return converter.fail("The response could not be stored; it has been logged. Retry the request.")
                return b""

            relay = cast(StreamRelay, ResponsesRelay(served.stream, served.first, converter, keep))
            translated = msgspec.structs.replace(served, first=converter.start(), stream=relay)
            await send_stream(call, receive, send, translated, headers, stream_finisher(call, served))
            return
        if served.status >= 400:
            err = upstream_client_error(served)
            await send_failure(call, send, OPENAI, err, headers)
            finish_refused(call, served, err, "client_error")
            return
        try:
            if native:
                outcome = from_response(served.body, served.deployment.name)
            else:
                outcome = from_completion(served.body, served.deployment.name, thinking)
            if outcome.tier is not None:
                shell.tier = outcome.tier  # the tier the answer was processed at
            response = shell.render(
                outcome.status, outcome.output, outcome.usage, error=outcome.error, incomplete=outcome.incomplete
            )
            out = _encode(response)  # the answer's body, and what is sealed (encoded once)
            await self._keep(who, shell, req, new, response, out, end)
        except ApiError as err:
            await send_failure(call, send, OPENAI, err, headers)
            finish_refused(call, served, err, "gateway_error")
            return
        finish_unary(call, served, out)
        await send_json(call, send, 200, out, [JSON, *headers])

    async def _agent_turn(
        self,
        call: Call,
        receive: Receive,
        send: Send,
        req: CreateResponse,
        body: bytes,
        shell: Shell,
        context: list[Item],
        new: list[Item],
        end: int | None,
    ) -> None:
        """A response with `mcp` or `memory` tools: the gateway runs the loop (api/responses/agent.py)."""
        who = tenant(call)
        memory = self.agent.memory_tools(who, req, call)
        state = need_state(self.state, "A request with MCP or memory tools (kept per tenant in the database)")
        self.pipeline.group(req.model)  # an unknown model is a 404 before any server is called
        servers = McpServerStore(state.keyring, state.engine)
        resolver = McpResolver(servers)
        resolved = [
            await stored(resolver.resolve(who, tool.mcp_spec(), f"tools[{i}]"))
            for i, tool in enumerate(req.tools or ())
            if tool.type == "mcp"
        ]

        self.limits.narrowed(req)  # a bad `multihome.agent` is a 400 now
        labels = {r.label for r in resolved}
        approved(context, new, [], labels.__contains__)  # a bad answer to an approval is a 400 now, not a failed run
        if req.background:  # a durable run on the job queue (api/responses/agent_job.py)
            assert self.background is not None  # present whenever the state store is
            await self.background.create(call, receive, send, req, body, new)
            return

        async def keep(response: dict[str, Any], terminal: bytes) -> None:
            await self._keep(who, shell, req, new, response, end=end)

        await self._ready_to_seal(who, shell, req)
        with self.agent_runs.held(who):  # a 429 past the tenant's share, before any server is called
            box = Toolbox(resolved, egress=self.agent.egress, registered=lambda view: servers.unchanged(who, view))
            prices = self.agent.prices
            run = AgentRun(
                self.pipeline,
                self.limits,
                call,
                body,
                req,
                shell,
                context,
                new,
                box,
                keep,
                prices=prices,
                memory=memory,
                admitted=self.agent.again(call),
                foreground=call.scope,  # a client that hangs up stops the run (agent.py `_left`)
            )
            await run.begin()
            if req.stream:
                await send_sse(
                    call, receive, send, run.events(), run.headers, closing=run.cut_events, stops_itself=True
                )
                return
            out = _encode(await run.result())
            await send_json(call, send, 200, out, [JSON, *run.headers])

    async def _ready_to_seal(self, who: str, shell: Shell, req: CreateResponse) -> None:
        """A turn whose answer is sealed once it is in (stored, a conversation's, or a unary answer kept with its
        Idempotency-Key: `_keep`) makes sure of the data key first: a KMS that cannot seal is a 503 before any
        model or tool is called (and billed), not after. A dict lookup when the key is cached."""
        keyed = held_key("responses") is not None and not req.stream
        if self.state is not None and (shell.store or req.conversation_id is not None or keyed):
            await stored(self.state.ready_to_seal(who))

    async def run_context(self, who: str, req: CreateResponse, new: list[Item]) -> tuple[list[Item], int | None]:
        """A turn's context (the items before its input `new`, oldest first), read when a background run
        starts (or a count is made: input_tokens.py), with its input checked against it again (the
        conversation may have changed since the create), and the conversation's end then for the check at
        its append (turn_append.py)."""
        _, context, conv = await self._chain_context(who, req)
        return context, checked_end(context, new, conv)

    async def _chain_context(
        self, who: str, req: CreateResponse
    ) -> tuple[list[StoredResponse] | None, list[Item], ItemPage | None]:
        """The chain the turn's context was read from (None for a conversation or no context), the context (the
        items before the turn's input, oldest first: the chain's inputs and outputs, or the conversation's
        items), and the conversation's items as read, with its totals (None without a conversation)."""
        if req.previous_response_id is not None:
            state = need_state(self.state, "'previous_response_id'")
            prev = req.previous_response_id
            chain = await stored(state.chain(who, prev)) if len(prev) <= MAX_ID else None
            if chain is None:
                raise ApiError(
                    400,
                    f"Previous response with id '{echo(prev)}' not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            running = next((turn.id for turn in chain if turn.status in ("queued", "in_progress")), None)
            if running is not None:  # its answer is not there yet: the model would see half the context
                raise bad_request(
                    f"Previous response with id '{running}' is still running (a background response); continue "
                    "it once it is final (poll GET /v1/responses/{id}).",
                    param="previous_response_id",
                    code="previous_response_in_progress",
                )
            context: list[Item] = []
            for turn in chain:
                context += turn.input
                context += turn.response.get("output") or []
            return chain, context, None
        conv = req.conversation_id
        if conv is not None:
            state = need_state(self.state, "'conversation'")
            items = await stored(state.items(who, conv)) if len(conv) <= MAX_ID else None
            if items is None:
                raise conversation_not_found(conv)
            return None, items.items, items
        return None, [], None

    async def _keep(
        self,
        who: str,
        shell: Shell,
        req: CreateResponse,
        new: list[Item],
        response: dict[str, Any],
        encoded: bytes | None = None,
        end: int | None = None,
    ) -> None:
        """Store the response and append the turn to its conversation, durably, before the client hears of it.
        `encoded`: the response as JSON, when the caller has it already. `end`: the conversation's end as read
        when the turn's input (a tool call or result) was checked against it.

        The append is checked again in its transaction (turn_append.py); refused, nothing of the turn is stored.
        Neither stored nor in a conversation, a keyed create's answer is kept with its key (idempotent.py)."""
        conv = req.conversation_id
        if not shell.store and conv is None:
            key = held_key("responses")
            if key is not None and self._keys is not None:  # a stream's retry cannot be a JSON body: its id only
                replay = None if req.stream else encoded if encoded is not None else _encode(response)
                await stored(self._keys.keep(key, shell.id, replay))
            return
        state = self.state
        assert state is not None  # create refused a request that needs one
        # A failed turn is kept (when stored) for retrieval, but the conversation goes on without it.
        # So is a cancelled one (a foreground agent run its client left: agent.py).
        append = [*new, *response["output"]] if conv is not None and response["status"] not in _NOT_APPENDED else []
        record = None
        if shell.store:
            record = StoredResponse(
                id=shell.id,
                tenant=who,
                status=response["status"],
                response=response,
                input=new,
                previous_response_id=req.previous_response_id,
                conversation_id=conv,
            )
            if not append:
                await stored(state.put_response(record, encoded=encoded))
                return
        if not append:
            return
        assert conv is not None
        counted, kept = len(new), record

        def write(end: int | None) -> Awaitable[Any]:
            if kept is None:  # no response stored: the items alone (False: deleted meanwhile, nothing to keep)
                return stored(
                    state.append_items(who, conv, append, counted=counted, expect_end=end, response_id=shell.id)
                )
            return stored(state.put_response(kept, append, encoded=encoded, counted=counted, expect_end=end))

        try:
            await append_turn(state, who, conv, new, end, write)
        except LookupError:
            # The conversation was deleted while the model answered (it existed when the turn began): the
            # answer, served and billed, is still kept and given, as a background turn's is.
            if record is not None:
                await stored(state.put_response(record, encoded=encoded))

    # -- stored responses ----------------------------------------------------------------------------
    async def _stored(self, call: Call, response_id: str) -> StoredResponse:
        found = None
        if self.state is not None and len(response_id) <= MAX_ID:
            found = await stored(self.state.get_response(tenant(call), response_id))
        if found is None:
            raise not_found(response_id)
        return found

    async def retrieve(self, call: Call, receive: Receive, send: Send) -> None:
        """`GET /v1/responses/{response_id}` (and `/input_items`)."""
        raw = query(call)
        check_include(raw)
        found = await self._stored(call, segments(call)[1])
        if streams(raw):
            if self.background is None or found.background is None:
                raise bad_request(
                    "Only a background response created with 'stream': true can be streamed again.", param="stream"
                )
            self.background.check_resumable(found)
            await self.background.send_events(call, receive, send, found.tenant, found.id, starting_after(raw))
            return
        if self.background is not None:
            found = await self.background.current(found)
        await answer(call, send, as_published(found.response))

    async def input_items(self, call: Call, receive: Receive, send: Send) -> None:
        """`GET /v1/responses/{response_id}/input_items`: this request's own input items (not the chain's)."""
        query = list_query(call, include=True)
        found = await self._stored(call, segments(call)[1])
        await answer(call, send, page_of(found.input, query))

    async def delete(self, call: Call, receive: Receive, send: Send) -> None:
        response_id = segments(call)[1]
        done = False
        if self.state is not None and len(response_id) <= MAX_ID:
            done = await stored(self.state.delete_response(tenant(call), response_id))
        if not done:
            raise not_found(response_id)
        self.held.forget(response_id)  # and every held context that has its content
        await answer(call, send, {"id": response_id, "object": "response", "deleted": True})

    async def cancel(self, call: Call, receive: Receive, send: Send) -> None:
        """`POST /v1/responses/{response_id}/cancel`: background responses only (idempotent)."""
        found = await self._stored(call, segments(call)[1])
        if self.background is None or found.background is None:
            raise bad_request("Only background responses can be cancelled.", code="invalid_request")
        await self.background.cancel(call, send, found)
