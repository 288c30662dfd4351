"""A browser's view of the console in process: log in with a key, and whether a session cookie still opens a
page (a replayed copy, after a logout or an org-admin's cut-off)."""

from __future__ import annotations

import httpx


def client(app, key: str | None = None) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw", headers=headers)


async def login(app, key: str) -> str:
    """The session cookie of a console login with `key`."""
    async with client(app) as browser:
        resp = await browser.post("/console/login", data={"key": key})
        assert resp.status_code == 303, resp.text[:300]
        return browser.cookies["mh_console"]


async def opens(app, cookie: str) -> bool:
    """Whether a replayed copy of the cookie opens a page (else: sent to the login form, session ended)."""
    async with client(app) as replay:
        replay.cookies.set("mh_console", cookie)
        page = await replay.get("/console/audit")
    if page.status_code == 200:
        return True
    assert page.status_code == 303 and page.headers["location"].startswith("/console/login"), page.status_code
    return False
