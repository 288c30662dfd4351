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


async def walk(
    admin: httpx.AsyncClient, path: str, limit: int, field: str = "id", **query: str
) -> tuple[list[str], int]:
    """The `field` (the ids) of a paged list's rows (api/admin/pages.py) read `limit` at a time (`query`: its
    other parameters), and how many pages that took; each page checked for its size and, by ids, its `last_id`."""
    seen: list[str] = []
    after, pages = None, 0
    while True:
        page = await ok(await admin.get(path, params={**query, "limit": limit, **({"after": after} if after else {})}))
        pages += 1
        assert len(page["data"]) <= limit and pages <= 1000, page
        seen += [row[field] for row in page["data"]]
        if field == "id":
            assert page["last_id"] == (page["data"][-1]["id"] if page["data"] else None)
        if not page["has_more"]:
            return seen, pages
        after = page["last_id"]


async def pages_through(
    client: httpx.AsyncClient,
    path: str,
    made: list[str],
    foreign: str,
    field: str = "id",
    *,
    by_name: bool = False,
    **query: str,
) -> None:
    """A paged list holding `made` (its rows' `field`, in its order): read 10 at a time, each once, in as many
    pages as that takes; the default page (up to 1,000) all of it, as a list under the page size answered before
    paging; and `refuses_bad_pages` (`foreign`: another tenant's row, made after `made`)."""
    assert await walk(client, path, 10, field, **query) == (made, -(-len(made) // 10))
    whole = await ok(await client.get(path, params=query))
    assert [row[field] for row in whole["data"]] == made
    assert (whole["object"], whole["has_more"]) == ("list", False)
    await refuses_bad_pages(client, path, foreign, by_name=by_name, **query)


async def refuses_bad_pages(
    admin: httpx.AsyncClient, path: str, foreign: str, *, by_name: bool = False, **query: str
) -> None:
    """A paged list's 400s (OpenAI's error format, never a 500): a limit out of 1-1000 or not a number, an
    `after` that is no row of this list nor an id that carries its place, a NUL-led 10,000-character one answered
    in a short message. `foreign`, another tenant's cursor past this list's rows: a place in this list's order
    (its id carries its time, or is its name, or the cursor its agent and user), past every row, nothing of the
    other tenant shown. `by_name`: a list keyed by name (MCP servers), where any name is a place. `query`: the
    list's other parameters."""
    for bad in ({"limit": 0}, {"limit": 1001}, {"limit": "ten"}, {"limit": "9" * 30}):
        assert error(await admin.get(path, params={**query, **bad}), 400)["param"] == "limit"
    nosuchrow = await admin.get(path, params={**query, "after": "zz-nosuchrow"})
    if by_name:
        assert (await ok(nosuchrow))["data"] == []  # past every name made ("server-NN")
    else:
        assert "after" in error(nosuchrow, 400)["message"]
    assert (await ok(await admin.get(path, params={**query, "after": foreign})))["data"] == []
    hostile = error(await admin.get(path, params={**query, "after": "\u0000" + "x" * 10_000}), 400)
    assert len(hostile["message"]) < 300


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
