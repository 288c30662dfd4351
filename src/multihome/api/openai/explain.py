"""`POST /v1/route/explain`: the plan a chat or embeddings request would get, computed by the same
code as a real call (identify, decide, plan); nothing is sent upstream and nothing is accounted.

`?work=<kind>` (policy/pins.py WORK_KINDS: background, agent_step, stored_response, memory_embedding)
explains the request as that kind of stateful work: the tenant's live pins narrow the plan as they
would the real step, and `stateful_pin` says which deployments they removed and why."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import msgspec

from ...policy.pins import MEMORY_EMBEDDING, WORK_KINDS
from ...schema.chat import parse_chat
from ...schema.decoding import top_level
from ...schema.embeddings import parse_embeddings
from ...schema.errors import bad_request, echo
from ..asgi import JSON, Receive, Send, read_body
from ..pipeline import Call, Pipeline
from ..render import send_json


class ExplainDoor:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def handle(self, call: Call, receive: Receive, send: Send) -> None:
        body = await read_body(call.scope, receive, self.pipeline.max_body)
        out = msgspec.json.encode(self.explain(call, body))
        await send_json(call, send, 200, out, [JSON, (b"x-request-id", call.request_id)])

    def explain(self, call: Call, body: bytes) -> dict[str, Any]:
        """The plan for `body` as `call.principal` would get it (also the console's route-explain form)."""
        pipeline = self.pipeline
        work = parse_qs(call.scope.get("query_string", b"").decode("latin-1")).get("work", [None])[-1]
        if work is not None and work not in WORK_KINDS:
            raise bad_request(f"'work' must be one of {', '.join(WORK_KINDS)}, not '{echo(work)}'.", param="work")
        call.work = work
        keys = top_level(body)
        if "input" in keys and "messages" not in keys:
            parsed_e = parse_embeddings(body)
            group = pipeline.group(parsed_e.request.model)
            shape = pipeline.shape(call, parsed_e, group, "embeddings")
        else:
            parsed = parse_chat(body)
            group = pipeline.group(parsed.request.model)
            # Stateful turns and steps reach policy as the Responses endpoint (a key's endpoint scope decides).
            endpoint = "chat" if work is None or work == MEMORY_EMBEDDING else "responses"
            shape = pipeline.shape(call, parsed, group, endpoint, parsed.request)
        call.group = group.name
        out = pipeline.router.explain(group, shape)
        if work is not None:
            pinned = getattr(shape.policy, "pinned", None)
            out["stateful_pin"] = pinned.to_dict() if pinned is not None else {"work": work, "pins": [], "removed": {}}
        return out
