"""A console logout ends the session for good (docs/console.md "Ending sessions"), in process: two gateways
(replicas) on one SQLite database and one session key. A copy of the cookie taken before the logout is
refused at once by the replica that logged out, and by the other at its next snapshot poll; the same key's
other sessions go on. Without storage the logout holds on the process that served it only, and says so.
(tests/e2e/test_console_logout.py does the same in Chromium against `multihome serve` replicas.)"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import time

import pytest

from admin_http import running
from builders import database, identity, open_door, single
from console_browser import client, login, opens

pytestmark = pytest.mark.anyio
ADMIN_ENV, KEY_ENV = "MH_TEST_CONSOLE_LOGOUT", "MH_TEST_CONSOLE_LOGOUT_KEY"
ADMIN_KEY = "mh-bootstrap-admin-key-for-console-logout"


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    monkeypatch.setenv(KEY_ENV, base64.b64encode(bytes(range(32))).decode())


def _cfg(storage: dict | None) -> dict:
    extra = {"storage": storage} if storage is not None else {"server": open_door()}
    return single(identity=identity(ADMIN_ENV), console={"session_key_env": KEY_ENV}, **extra)


async def _logout(app, cookie: str) -> str:
    """Log out as the browser holding `cookie` does (the page's form, its CSRF token); the notice shown."""
    async with client(app) as browser:
        browser.cookies.set("mh_console", cookie)
        page = await browser.get("/console/audit")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        out = await browser.post("/console/logout", data={"csrf": csrf})
        assert out.status_code == 303 and "mh_console=;" in out.headers["set-cookie"]
        return (await browser.get(out.headers["location"])).text


async def test_a_copied_cookie_is_refused_after_logout_on_every_replica(sqlite_database):
    url = sqlite_database()
    async with contextlib.AsyncExitStack() as stack:
        one = await stack.enter_async_context(running(_cfg(database(url, refresh_s=0.25))))
        two = await stack.enter_async_context(running(_cfg(database(url, refresh_s=0.25))))
        copied, other = await login(one, ADMIN_KEY), await login(one, ADMIN_KEY)
        assert await opens(one, copied) and await opens(two, copied)  # one key, two replicas

        notice = await _logout(one, copied)
        assert "no longer opens on any replica" in notice
        assert not await opens(one, copied)  # the replica that logged out: at once
        deadline = time.monotonic() + 60
        while await opens(two, copied) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # Before: the copy opened every page on both replicas until session_ttl_s.
        assert not await opens(two, copied), "the other replica still accepts a logged-out session"
        assert await opens(one, other) and await opens(two, other)  # the same key's other session goes on
        assert await opens(two, await login(two, ADMIN_KEY))  # and the key logs in again


async def test_without_storage_a_logout_holds_on_its_process_and_says_so():
    async with running(_cfg(None)) as one, running(_cfg(None)) as two:
        copied = await login(one, ADMIN_KEY)
        notice = await _logout(one, copied)
        assert "Without storage" in notice and "other replicas" in notice
        assert not await opens(one, copied)  # before: opened until session_ttl_s
        assert await opens(two, copied)  # what docs/console.md says: no store, no record elsewhere
