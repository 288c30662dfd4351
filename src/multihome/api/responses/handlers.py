"""The handler names of the Responses and Conversations routes (api/routes.py), bound to their doors."""

from __future__ import annotations

from ...state import StateStore
from ..pipeline import Pipeline
from ..routes import Handler
from .agent import AgentSetup
from .background import Background
from .conversations import ConversationsDoor
from .door import ResponsesDoor


def handlers(
    pipeline: Pipeline,
    state: StateStore | None,
    background: Background | None = None,
    agent: AgentSetup | None = None,
) -> dict[str, Handler]:
    """`state` is None without storage: responses are then served but not stored (docs/responses.md);
    `background` runs background responses (with storage only); `agent`: what runs with MCP tools
    need (their limits, prices, egress rules)."""
    responses, conversations = (
        ResponsesDoor(pipeline, state, background, agent),
        ConversationsDoor(pipeline, state),
    )
    if background is not None:
        background.runner.context = responses.run_context  # a run rebuilds its turn's context as a create does
    return {
        "responses_create": responses.create,
        "responses_retrieve": responses.retrieve,
        "responses_delete": responses.delete,
        "responses_cancel": responses.cancel,
        "responses_input_items": responses.input_items,
        "conversations_create": conversations.create,
        "conversations_retrieve": conversations.retrieve,
        "conversations_update": conversations.update,
        "conversations_delete": conversations.delete,
        "conversation_items_list": conversations.list_items,
        "conversation_items_create": conversations.add_items,
        "conversation_item_retrieve": conversations.get_item,
        "conversation_item_delete": conversations.delete_item,
    }
