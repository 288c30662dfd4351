"""`POST /v1/route/explain`: the plan a chat or embeddings request would get, computed by the same
code as a real call (identify, decide, plan); nothing is sent upstream and nothing is accounted."""

from __future__ import annotations

from typing import Any

import msgspec

from ...schema.chat import parse_chat
from ...schema.decoding import top_level
from ...schema.embeddings import parse_embeddings
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
        keys = top_level(body)
        if "input" in keys and "messages" not in keys:
            parsed_e = parse_embeddings(body)
            group = pipeline.group(parsed_e.request.model)
            shape = pipeline.shape(call, parsed_e, group, "embeddings")
        else:
            parsed = parse_chat(body)
            group = pipeline.group(parsed.request.model)
            shape = pipeline.shape(call, parsed, group, "chat", parsed.request)
        call.group = group.name
        return pipeline.router.explain(group, shape)
