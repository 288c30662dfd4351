"""docs/console.md "Front end" and "Logging in": every console page, the login form, a page and a refusal
alike, is sent with the exact Content-Security-Policy, `X-Frame-Options: DENY`, `nosniff` and
`Cache-Control: no-store`; the session cookie lasts `console.session_ttl_s` (8 hours by default), on
`Path=/console`, HttpOnly and SameSite=Strict. In process, on SQLite."""

from __future__ import annotations

import httpx
import pytest

from admin_http import running
from builders import identity, single, sqlite

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-console-headers"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _page_headers(resp: httpx.Response) -> None:
    assert resp.headers["content-security-policy"] == CSP, resp.headers
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["cache-control"] == "no-store"


async def test_every_page_carries_the_documented_headers_and_the_cookie_its_ttl(tmp_path, monkeypatch):
    monkeypatch.setenv("MH_TEST_CONSOLE_ADMIN", ADMIN_KEY)
    cfg = single(storage=sqlite(tmp_path / "mh.db"), identity=identity("MH_TEST_CONSOLE_ADMIN"))
    async with running(cfg) as app:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as browser:
            form = await browser.get("/console/login")
            assert form.status_code == 200
            _page_headers(form)
            refused = await browser.post("/console/login", data={"key": "mh-not-a-key"})
            assert refused.status_code == 401
            _page_headers(refused)
            logged_in = await browser.post("/console/login", data={"key": ADMIN_KEY})
            assert logged_in.status_code == 303
            cookie = logged_in.headers["set-cookie"]
            assert cookie.startswith("mh_console=")
            attributes = {part.strip() for part in cookie.split(";")[1:]}
            assert {"Path=/console", "HttpOnly", "SameSite=Strict", "Max-Age=28800"} <= attributes, cookie
            assert "Secure" not in attributes  # plain HTTP without console.secure_cookie
            for path in ("/console/overview", "/console/routing", "/console/tenants/ten_nope"):
                page = await browser.get(path)
                assert page.status_code in (200, 403, 404), (path, page.status_code)
                _page_headers(page)


async def test_the_sign_on_callback_shows_at_most_64_characters_of_the_providers_error(tmp_path, monkeypatch):
    """`?error=` is anyone's to write (a link to the callback): the login page repeats its start only, as every
    error repeats a client's value (schema/errors.py `echo`), so a crafted link cannot put a paragraph of
    its own text on the gateway's page."""
    from builders import oidc
    from oidc_issuer import LocalIssuer

    monkeypatch.setenv("MH_TEST_CONSOLE_ADMIN", ADMIN_KEY)
    with LocalIssuer() as idp:
        cfg = single(
            storage=sqlite(tmp_path / "mh.db"),
            identity=identity("MH_TEST_CONSOLE_ADMIN", oidc(idp, audiences=["console"])),
            console={"oidc": {"issuer": "local", "client_id": "console"}},
        )
        async with running(cfg) as app:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as browser:
                text = "access_denied " + "Your account is locked: call +1 555 0100 to unlock it now. " * 4
                page = await browser.get("/console/oidc/callback", params={"error": text})
    assert page.status_code == 401
    assert "access_denied Your account is locked" in page.text and "to unlock it now. Your" not in page.text
