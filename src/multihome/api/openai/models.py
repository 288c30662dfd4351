"""`GET /v1/models` and `GET /v1/models/{model}`: the model groups this gateway serves, in
OpenAI's model-list shape, or in Anthropic's for a caller that sends `anthropic-version` (the
anthropic SDK's `models.list()` and `models.retrieve()`, which read `type`, `display_name` and
`created_at`, and page by `has_more`/`last_id`), each encoded once at start-up. The Anthropic shape lists
only the groups `/v1/messages` can serve (a chat deployment in them): not an embeddings group."""

from __future__ import annotations

import datetime as dt
import time

import msgspec

from ...schema.errors import ApiError, echo
from ..anthropic.errors import ANTHROPIC
from ..asgi import JSON, Receive, Send, header
from ..pipeline import Call, Pipeline
from ..render import send_failure, send_json

MODEL_PREFIX = "/v1/models/"
_ANTHROPIC_VERSION = b"anthropic-version"  # every anthropic SDK request carries it; OpenAI's never does


class ModelsDoor:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        created = int(time.time())
        names = list(pipeline.catalog.groups)
        entries = {name: {"id": name, "object": "model", "created": created, "owned_by": "multihome"} for name in names}
        self._list = msgspec.json.encode({"object": "list", "data": list(entries.values())})
        self._one = {name: msgspec.json.encode(entry) for name, entry in entries.items()}
        # Anthropic's ModelInfo: a group has no release date, so the gateway's start stands for it.
        at = dt.datetime.fromtimestamp(created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        # An Anthropic client lists models to pick one for Messages: only the groups /v1/messages can serve.
        chat = [name for name, g in pipeline.catalog.groups.items() if g.can("chat")]
        claude = {name: {"type": "model", "id": name, "display_name": name, "created_at": at} for name in chat}
        page = {"data": list(claude.values()), "has_more": False, "first_id": chat[0] if chat else None}
        self._anthropic_list = msgspec.json.encode({**page, "last_id": chat[-1] if chat else None})
        self._anthropic_one = {name: msgspec.json.encode(entry) for name, entry in claude.items()}

    async def list(self, call: Call, receive: Receive, send: Send) -> None:
        anthropic = header(call.scope, _ANTHROPIC_VERSION) is not None
        body = self._anthropic_list if anthropic else self._list
        await send_json(call, send, 200, body, [JSON, *_ids(call, anthropic)])

    async def get(self, call: Call, receive: Receive, send: Send) -> None:
        name = call.scope["path"][len(MODEL_PREFIX) :]
        anthropic = header(call.scope, _ANTHROPIC_VERSION) is not None
        body = (self._anthropic_one if anthropic else self._one).get(name)
        if body is None:
            try:
                self.pipeline.group(name)  # raises the 404 that lists the models there are
                raise _not_for_messages(name)  # the group exists, but serves no Messages call
            except ApiError as err:
                if not anthropic:
                    raise
                await send_failure(call, send, ANTHROPIC, err, [*_ids(call, True)])
            return
        await send_json(call, send, 200, body, [JSON, *_ids(call, anthropic)])


def _not_for_messages(name: str) -> ApiError:
    return ApiError(
        404,
        f"The model '{echo(name)}' serves no Messages call on this gateway (none of its deployments is a chat model).",
        param="model",
        code="model_not_found",
    )


def _ids(call: Call, anthropic: bool) -> list[tuple[bytes, bytes]]:
    names = ANTHROPIC.request_id_headers if anthropic else (b"x-request-id",)
    return [(name, call.request_id) for name in names]
