"""Checks on admin API answers shared by the in-process admin tests, and the app they run."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import httpx
import uvicorn

from builders import yaml_text
from multihome.app import build_app
from multihome.config import parse_config
from ports import free_port


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


@contextlib.contextmanager
def served_for_cli(config_text: str, monkeypatch, admin_key: str) -> Iterator[None]:
    """The real app served by uvicorn on 127.0.0.1 (a thread of this process), with MULTIHOME_URL and
    MULTIHOME_ADMIN_KEY set for the `multihome` admin commands a test runs in process."""
    port = free_port()
    app = build_app(parse_config(config_text))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.05)
    monkeypatch.setenv("MULTIHOME_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MULTIHOME_ADMIN_KEY", admin_key)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=30)
