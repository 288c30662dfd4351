"""`POST /v1/route/explain`: the plan a chat or embeddings request would get, computed by the same
code as a real call (identify, decide, plan); nothing is sent upstream and nothing is accounted."""

from __future__ import annotations

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
        pipeline = self.pipeline
        body = await read_body(call.scope, receive, pipeline.max_body)
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
        out = msgspec.json.encode(pipeline.router.explain(group, shape))
        await send_json(call, send, 200, out, [JSON, (b"x-request-id", call.request_id)])
