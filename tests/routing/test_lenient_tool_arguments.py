"""A lenient OpenAI-compatible upstream (vLLM, some Azure builds) that sends a tool call's `arguments` as a JSON
object instead of the string OpenAI's schema has: the gateway answers with the string (the object, serialised),
unary and streamed, through the official SDK; before, the answer was `malformed_response` (503 after failover)
and the stream's first event a `malformed_stream` error. An answer with string arguments passes unchanged."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import openai
import pytest
from aiohttp import web

from builders import config, deployment, group, open_door, provider, typed
from multihome.app import build_app

pytestmark = pytest.mark.anyio
ARGS = {"city": "Paris", "units": ["c"], "days": 3}


def _completion(arguments: object) -> dict:
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": arguments}}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }


def _chunks(arguments: object) -> list[dict]:
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": arguments}}
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    return [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [call]}}]},
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {**head, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}},
    ]


@asynccontextmanager
async def _upstream(arguments: object) -> AsyncIterator[str]:
    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.json_response(_completion(arguments))
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for chunk in _chunks(arguments):
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def _sdk(arguments: object) -> AsyncIterator[openai.AsyncOpenAI]:
    async with _upstream(arguments) as url:
        cfg = config(
            server=open_door(),
            providers={"lenient": provider("openai", url)},
            deployments={"d": deployment("lenient", "m")},
            model_groups={"g": group("d", retries=0)},
        )
        gateway = build_app(typed(cfg))
        for service in gateway.services:
            await service.start()
        try:
            http = httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gw/v1", timeout=30)
            async with openai.AsyncOpenAI(api_key="k", base_url="http://gw/v1", max_retries=0, http_client=http) as sdk:
                yield sdk
        finally:
            for service in reversed(gateway.services):
                await service.close()


TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
MESSAGES = [{"role": "user", "content": "weather in Paris?"}]


@pytest.mark.parametrize("arguments", [ARGS, json.dumps(ARGS)], ids=["object", "string"])
async def test_a_tool_calls_arguments_reach_the_client_as_a_string(arguments):
    async with _sdk(arguments) as sdk:
        answer = await sdk.chat.completions.create(model="g", messages=MESSAGES, tools=TOOLS)
    call = answer.choices[0].message.tool_calls[0]
    assert isinstance(call.function.arguments, str)
    assert json.loads(call.function.arguments) == ARGS
    assert answer.usage.total_tokens == 12


@pytest.mark.parametrize("arguments", [ARGS, json.dumps(ARGS)], ids=["object", "string"])
async def test_a_streamed_tool_calls_arguments_reach_the_client_as_a_string(arguments):
    async with _sdk(arguments) as sdk:
        stream = await sdk.chat.completions.create(model="g", messages=MESSAGES, tools=TOOLS, stream=True)
        pieces = []
        async for chunk in stream:
            for choice in chunk.choices:
                for call in choice.delta.tool_calls or ():
                    pieces.append(call.function.arguments)
    assert pieces and all(isinstance(p, str) for p in pieces)
    assert json.loads("".join(pieces)) == ARGS
