"""`POST /v1/route/explain`: the plan a chat or embeddings request would get, computed by the same
code as a real call (identify, decide, plan); nothing is sent upstream and nothing is accounted.

`?work=<kind>` (policy/pins.py WORK_KINDS: background, agent_step, stored_response, memory_embedding)
explains the request as that kind of stateful work: the tenant's live pins narrow the plan as they
would the real step, and `stateful_pin` says which deployments they removed and why.

A read-only caller (api/read_only.py) still reads the plan; `refused` is the 403 its own call would get, and
`would_attempt` is empty."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import msgspec

from ...policy.pins import MEMORY_EMBEDDING, WORK_KINDS
from ...schema.chat import ParsedChat, parse_chat
from ...schema.decoding import top_level
from ...schema.embeddings import ParsedEmbeddings, parse_embeddings
from ...schema.errors import ApiError, bad_request, echo
from ..asgi import JSON, Receive, Send, read_body
from ..big_bodies import OFF_LOOP_OVER
from ..pipeline import Call, Pipeline
from ..read_only import explained_refusal
from ..render import send_json


class ExplainDoor:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def handle(self, call: Call, receive: Receive, send: Send) -> None:
        body = await read_body(call.scope, receive, self.pipeline.max_body, self.pipeline.bodies)
        # Parsed as the chat and embeddings doors parse (the same caps), and a large body on their pool.
        parsed = parse(body) if len(body) <= OFF_LOOP_OVER else await self.pipeline.bodies.parse(parse, body)
        out = msgspec.json.encode(self.explain(call, body, parsed))
        await send_json(call, send, 200, out, [JSON, (b"x-request-id", call.request_id)])

    def explain(self, call: Call, body: bytes, parsed: ParsedChat | ParsedEmbeddings | None = None) -> dict[str, Any]:
        """The plan for `body` (`parsed`: as `parse` read it) as `call.principal` would get it (also the
        console's route-explain form)."""
        pipeline = self.pipeline
        work = parse_qs(call.scope.get("query_string", b"").decode("latin-1")).get("work", [None])[-1]
        if work is not None and work not in WORK_KINDS:
            raise bad_request(f"'work' must be one of {', '.join(WORK_KINDS)}, not '{echo(work)}'.", param="work")
        call.work = work
        if parsed is None:
            parsed = parse(body)
        group = pipeline.group(parsed.request.model)
        call.group = group.name
        if isinstance(parsed, ParsedEmbeddings):
            endpoint, chat = "embeddings", None
        else:
            # Stateful turns and steps reach policy as the Responses endpoint (a key's endpoint scope decides).
            endpoint = "chat" if work is None or work == MEMORY_EMBEDDING else "responses"
            chat = parsed.request
        refusal = explained_refusal(call.principal, endpoint, work) if call.principal is not None else None
        try:
            shape = pipeline.shape(call, parsed, group, endpoint, chat)
        except ApiError as err:
            if refusal is None or err.status != 403:
                raise
            # The call's role is checked before policy: its refusal is the role's, and policy left no plan.
            nothing = {
                "object": "route.explanation",
                "model": group.name,
                "fallback_groups": [],
                "plans": [],
                "breakers": {},
            }
            return _refused(nothing, refusal)
        out = pipeline.router.explain(group, shape)
        if refusal is not None:  # the plan stays readable (an auditor's read); the caller's own call is refused
            _refused(out, refusal)
        if work is not None:
            pinned = getattr(shape.policy, "pinned", None)
            out["stateful_pin"] = pinned.to_dict() if pinned is not None else {"work": work, "pins": [], "removed": {}}
        return out


def _refused(out: dict[str, Any], refusal: ApiError) -> dict[str, Any]:
    """`out` saying the caller's own call is refused (`refusal`, the error it gets) and would attempt nothing."""
    out["would_attempt"] = []
    out["refused"] = {"status": refusal.status, **msgspec.structs.asdict(refusal.body)}
    return out


def parse(body: bytes) -> ParsedChat | ParsedEmbeddings:
    """`body` as the embeddings door reads it (an `input` and no `messages`), else as the chat door does."""
    keys = top_level(body)
    if "input" in keys and "messages" not in keys:
        return parse_embeddings(body)
    return parse_chat(body)
