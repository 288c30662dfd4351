"""`POST /v1/responses/input_tokens`: how many input tokens a Responses request would send, by the estimate
the Anthropic door's count_tokens answers with (schema/estimate.py: about four characters a token), not a
model's tokenizer.

The body is parsed and checked as a create's (the same 400s), policy decides on its model group as for a
create (a 403 when it refuses), and the turn's context is rebuilt from the store as a create rebuilds it
(`previous_response_id`, `conversation`: another tenant's ids are not found), then translated into the chat
request a provider would be sent, which is what is counted. No provider (nor MCP server) is called, and
nothing is stored, metered or audited, as for count_tokens.
"""

from __future__ import annotations

from ...schema import estimate
from ...schema.responses import parse_create
from ..asgi import Receive, Send, read_body
from ..big_bodies import OFF_LOOP_OVER
from ..pipeline import Call, narrowing
from .common import answer, tenant
from .door import ResponsesDoor
from .items import stored_items
from .translate import to_canonical

OBJECT = "response.input_tokens"


class InputTokens:
    """The count, made with a Responses door's parsing, store and thinking keys."""

    def __init__(self, door: ResponsesDoor) -> None:
        self.door = door

    async def count(self, call: Call, receive: Receive, send: Send) -> None:
        pipeline = self.door.pipeline
        body = await read_body(call.scope, receive, pipeline.max_body, pipeline.bodies)
        big = len(body) > OFF_LOOP_OVER
        req = await pipeline.bodies.parse(parse_create, body) if big else parse_create(body)
        group = pipeline.group(req.model)  # an unknown model is a 404, as on a create
        call.group = group.name
        pipeline.admit(call, group, "responses")
        who = tenant(call)
        new = stored_items(req.input)
        context, _ = await self.door.run_context(who, req, new)
        thinking = self.door.thinking.of(who)  # Claude's sealed thinking in the context is sent back, so counted
        # A stored context may hold tens of MiB behind a small body (~1.5 s of translation for 60 MiB), and a
        # count costs the tenant nothing: one with a context is translated off the event loop (big_bodies.py).
        pool = pipeline.bodies if big or context else None
        canonical, _ = await to_canonical(req, context, new, thinking=thinking, pool=pool)
        narrowing(call.scope, canonical.raw, group)  # what a create refuses of it (a repeated header, a foreign name)
        await answer(call, send, {"object": OBJECT, "input_tokens": estimate.prompt_tokens(canonical.request)})
