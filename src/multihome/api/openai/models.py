"""`GET /v1/models` and `GET /v1/models/{model}`: the model groups this gateway serves, in
OpenAI's model-list shape, encoded once at start-up."""

from __future__ import annotations

import time

import msgspec

from ..asgi import JSON, Receive, Send
from ..pipeline import Call, Pipeline
from ..render import send_json

MODEL_PREFIX = "/v1/models/"


class ModelsDoor:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        created = int(time.time())
        entries = {
            name: {"id": name, "object": "model", "created": created, "owned_by": "multihome"}
            for name in pipeline.catalog.groups
        }
        self._list = msgspec.json.encode({"object": "list", "data": list(entries.values())})
        self._one = {name: msgspec.json.encode(entry) for name, entry in entries.items()}

    async def list(self, call: Call, receive: Receive, send: Send) -> None:
        await send_json(call, send, 200, self._list, [JSON, (b"x-request-id", call.request_id)])

    async def get(self, call: Call, receive: Receive, send: Send) -> None:
        name = call.scope["path"][len(MODEL_PREFIX) :]
        body = self._one.get(name)
        if body is None:
            self.pipeline.group(name)  # raises the 404 that lists the models there are
            return
        await send_json(call, send, 200, body, [JSON, (b"x-request-id", call.request_id)])
