"""Checks on admin API answers shared by the in-process admin tests, and the app they run."""

from __future__ import annotations

import contextlib

import httpx

from builders import yaml_text
from multihome.app import build_app
from multihome.config import parse_config


@contextlib.asynccontextmanager
async def running(config: str | dict):
    """The real app in process on this config (its text, or a mapping built with tests/builders.py),
    its services started (and closed again afterwards)."""
    app = build_app(parse_config(config if isinstance(config, str) else yaml_text(config)))
    for service in app.services:
        await service.start()
    try:
        yield app
    finally:
        for service in reversed(app.services):
            await service.close()


async def ok(resp: httpx.Response, status: int = 200) -> dict:
    assert resp.status_code == status, resp.text
    return resp.json()


def error(resp: httpx.Response, status: int) -> dict:
    """The OpenAI error envelope of a refused request, checked for its four fields."""
    assert resp.status_code == status, resp.text
    body = resp.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"]
    return body
