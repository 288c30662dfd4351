"""The handler names of the Responses and Conversations routes (api/routes.py), bound to their doors."""

from __future__ import annotations

from ...state import StateStore
from ..pipeline import Pipeline
from ..routes import Handler
from ..tenant_gate import TenantGate
from .agent import AgentSetup
from .background import Background
from .conversations import ConversationsDoor
from .door import ResponsesDoor


def handlers(
    pipeline: Pipeline,
    state: StateStore | None,
    background: Background | None = None,
    agent: AgentSetup | None = None,
    conversations_gate: TenantGate | None = None,
) -> dict[str, Handler]:
    """`state` is None without storage: responses are then served but not stored (docs/responses.md);
    `background` runs background responses (with storage only); `agent`: what runs with MCP tools
    need (their limits, prices, egress rules); `conversations_gate`: a tenant's share of the conversation
    routes' calls running at once (tenant_gate.py)."""
    responses, conversations = (
        ResponsesDoor(pipeline, state, background, agent),
        ConversationsDoor(pipeline, state),
    )
    if background is not None:
        background.runner.context = responses.run_context  # a run rebuilds its turn's context as a create does
    gate = conversations_gate or TenantGate(None, "")
    return {
        "responses_create": responses.create,
        "responses_retrieve": responses.retrieve,
        "responses_delete": responses.delete,
        "responses_cancel": responses.cancel,
        "responses_input_items": responses.input_items,
        "conversations_create": gate.guard(conversations.create),
        "conversations_retrieve": gate.guard(conversations.retrieve),
        "conversations_update": gate.guard(conversations.update),
        "conversations_delete": gate.guard(conversations.delete),
        "conversation_items_list": gate.guard(conversations.list_items),
        "conversation_items_create": gate.guard(conversations.add_items),
        "conversation_item_retrieve": gate.guard(conversations.get_item),
        "conversation_item_delete": gate.guard(conversations.delete_item),
    }
