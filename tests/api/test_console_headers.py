"""docs/console.md "Front end" and "Logging in": every console page, the login form, a page and a refusal
alike, is sent with the exact Content-Security-Policy, `X-Frame-Options: DENY`, `nosniff` and
`Cache-Control: no-store`; the session cookie lasts `console.session_ttl_s` (8 hours by default), on
`Path=/console`, HttpOnly and SameSite=Strict. In process, on SQLite."""

from __future__ import annotations

import html
import re

import httpx
import pytest

from admin_http import running
from builders import identity, oidc, single, sqlite
from multihome.api.console import web
from oidc_issuer import LocalIssuer

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


async def test_a_login_next_with_a_line_break_goes_home_not_into_the_location_header(tmp_path, monkeypatch):
    """uvicorn refuses a header value with a control character: before, a login whose `next` (a hidden field the
    login form fills from the URL) held one was a 500 with the answer cut, the session cookie never set."""
    monkeypatch.setenv("MH_TEST_CONSOLE_ADMIN", ADMIN_KEY)
    cfg = single(storage=sqlite(tmp_path / "mh.db"), identity=identity("MH_TEST_CONSOLE_ADMIN"))
    async with running(cfg) as app:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as browser:
            for bad in ("/console/audit\r\nSet-Cookie: mh_console=x", "/console/audit\n", "/console/\taudit\x00"):
                form = await browser.get("/console/login", params={"next": bad})
                kept_next = re.findall(r'name="next" value="([^"]*)"', form.text)
                assert form.status_code == 200 and all(html.unescape(v).isprintable() for v in kept_next), kept_next
                logged_in = await browser.post("/console/login", data={"key": ADMIN_KEY, "next": bad})
                assert logged_in.status_code == 303 and logged_in.headers["location"] == "/console/overview"
                assert logged_in.headers["set-cookie"].startswith("mh_console=")
            kept = await browser.post("/console/login", data={"key": ADMIN_KEY, "next": "/console/audit?kind=call"})
            assert kept.headers["location"] == "/console/audit?kind=call"


async def test_a_credential_too_long_for_the_session_cookies_is_told_so_on_the_login_form(tmp_path, monkeypatch):
    monkeypatch.setenv("MH_TEST_CONSOLE_ADMIN", ADMIN_KEY)
    monkeypatch.setattr(web, "_PART", 16)  # the admin key's sealed session then needs more parts than allowed
    cfg = single(storage=sqlite(tmp_path / "mh.db"), identity=identity("MH_TEST_CONSOLE_ADMIN"))
    async with running(cfg) as app:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as browser:
            refused = await browser.post("/console/login", data={"key": ADMIN_KEY})
            assert refused.status_code == 400 and "too long to keep in a browser session" in refused.text
            assert "set-cookie" not in refused.headers
            _page_headers(refused)


async def test_secure_cookie_marks_the_sign_on_cookie_secure_too(tmp_path, monkeypatch):
    """`console.secure_cookie: true` (a TLS proxy in front that does not say so) marks every console cookie
    Secure: before, the pending sign-on's cookie (its PKCE verifier and nonce, sealed) was not."""
    monkeypatch.setenv("MH_TEST_CONSOLE_ADMIN", ADMIN_KEY)
    with LocalIssuer() as issuer:
        cfg = single(
            storage=sqlite(tmp_path / "mh.db"),
            identity=identity("MH_TEST_CONSOLE_ADMIN", oidc(issuer, audiences=["mh-console"])),
            console={"secure_cookie": True, "oidc": {"issuer": "local", "client_id": "mh-console"}},
        )
        async with running(cfg) as app:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as browser:
                start = await browser.get("/console/login/oidc")
                assert start.status_code == 303, start.text
                (pending,) = start.headers.get_list("set-cookie")
                assert pending.startswith("mh_console_sso=")
                assert "Secure" in {part.strip() for part in pending.split(";")}, pending


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
