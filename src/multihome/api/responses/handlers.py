"""The handler names of the Responses and Conversations routes (api/routes.py), bound to their doors."""

from __future__ import annotations

from ...state import StateStore
from ..asgi import Receive, Send
from ..pipeline import Call, Pipeline
from ..routes import Handler
from ..tenant_gate import TenantGate
from .agent import AgentSetup
from .background import Background
from .common import query
from .conversations import ConversationsDoor
from .door import ResponsesDoor, streams
from .input_tokens import InputTokens


def handlers(
    pipeline: Pipeline,
    state: StateStore | None,
    background: Background | None = None,
    agent: AgentSetup | None = None,
    state_gate: TenantGate | None = None,
) -> dict[str, Handler]:
    """`state` is None without storage: responses are then served but not stored (docs/responses.md);
    `background` runs background responses (with storage only); `agent`: what runs with MCP tools
    need (their limits, prices, egress rules); `state_gate`: a tenant's share of the stored-state routes'
    calls running at once (tenant_gate.py): the conversations', a response's read, delete and cancel, and a
    count of input tokens (a create is a model call, held by rate limits and budgets; a stream is held by the
    streams' share)."""
    responses, conversations = (
        ResponsesDoor(pipeline, state, background, agent),
        ConversationsDoor(pipeline, state),
    )
    if background is not None:
        background.runner.context = responses.run_context  # a run rebuilds its turn's context as a create does
    gate = state_gate or TenantGate(None, "")
    read = gate.guard(responses.retrieve)

    async def retrieve(call: Call, receive: Receive, send: Send) -> None:
        await (responses.retrieve if streams(query(call)) else read)(call, receive, send)

    return {
        "responses_create": responses.create,
        "responses_input_tokens": gate.guard(InputTokens(responses).count),  # it reads the stored context
        "responses_retrieve": retrieve,
        "responses_delete": gate.guard(responses.delete),
        "responses_cancel": gate.guard(responses.cancel),
        "responses_input_items": gate.guard(responses.input_items),
        "conversations_create": gate.guard(conversations.create),
        "conversations_retrieve": gate.guard(conversations.retrieve),
        "conversations_update": gate.guard(conversations.update),
        "conversations_delete": gate.guard(conversations.delete),
        "conversation_items_list": gate.guard(conversations.list_items),
        "conversation_items_create": gate.guard(conversations.add_items),
        "conversation_item_retrieve": gate.guard(conversations.get_item),
        "conversation_item_delete": gate.guard(conversations.delete_item),
    }
