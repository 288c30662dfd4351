"""The console's session cookie, CSRF token, static files and redirects, without a browser
(tests/e2e/test_console.py drives the whole console in Chromium)."""

from __future__ import annotations

import base64

import pytest

from multihome.api.asgi import Message
from multihome.api.console import web
from multihome.api.console.session import SESSION_KEY_ENV, SessionError, Sessions, csrf_ok, session_key
from multihome.api.console.site import _local
from multihome.app import build_app
from multihome.config import ConfigError, parse_config
from multihome.config.console import ConsoleConfig
from multihome.schema.errors import ApiError

pytestmark = pytest.mark.anyio
KEY = bytes(range(32))
BASE = """
server: {allow_unauthenticated: true}
providers: {p: {kind: openai, endpoint: "http://127.0.0.1:9/v1"}}
deployments: {d: {provider: p, model: m}}
model_groups: {g: {deployments: [d]}}
"""


def test_a_sealed_session_opens_only_with_its_key_and_before_it_expires():
    sessions = Sessions(KEY, ttl_s=60)
    session, cookie = sessions.new("mh_secret_key")
    assert "mh_secret_key" not in cookie and "secret" not in base64.urlsafe_b64decode(cookie + "===").decode("latin-1")
    assert sessions.open(cookie) == session
    tampered = cookie[:-2] + ("A" if cookie[-2] != "A" else "B") + cookie[-1]
    for bad in (tampered, "", None, "not base64 at all!", cookie[:10]):
        with pytest.raises(SessionError):
            sessions.open(bad)
    with pytest.raises(SessionError):
        Sessions(bytes(32), ttl_s=60).open(cookie)  # another gateway's key
    with pytest.raises(SessionError, match="expired"):
        Sessions(KEY, ttl_s=-1).open(Sessions(KEY, ttl_s=-1).new("k")[1])


def test_the_csrf_token_is_per_session():
    sessions = Sessions(KEY, ttl_s=60)
    a, _ = sessions.new("k")
    b, _ = sessions.new("k")
    assert a.csrf != b.csrf and csrf_ok(a, a.csrf)
    assert not csrf_ok(a, b.csrf) and not csrf_ok(a, None) and not csrf_ok(a, "")


def test_the_session_key_comes_from_the_environment_when_named(monkeypatch):
    monkeypatch.delenv(SESSION_KEY_ENV, raising=False)
    assert len(session_key(ConsoleConfig())) == 32  # drawn at start
    monkeypatch.setenv("MH_CONSOLE_KEY", base64.b64encode(KEY).decode())
    assert session_key(ConsoleConfig(session_key_env="MH_CONSOLE_KEY")) == KEY
    monkeypatch.setenv("MH_CONSOLE_KEY", base64.b64encode(b"short").decode())
    with pytest.raises(ValueError, match="32 bytes"):
        session_key(ConsoleConfig(session_key_env="MH_CONSOLE_KEY"))
    with pytest.raises(ValueError, match="is not set"):
        session_key(ConsoleConfig(session_key_env="MH_CONSOLE_UNSET"))
    monkeypatch.setenv(SESSION_KEY_ENV, base64.b64encode(KEY).decode())  # what `serve --workers` hands on
    assert session_key(ConsoleConfig()) == KEY


def test_only_console_paths_are_followed_after_login():
    assert _local("/console/tenants/ten_a") == "/console/tenants/ten_a"
    for target in ("https://evil.example/console/", "//evil.example/console/", "/console\\..\\x", "/admin/v1/", None):
        assert _local(target) is None


async def test_static_files_are_the_packaged_ones_only():
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await web.send_static(send, "vendor/htmx.min.js")
    assert sent[0]["status"] == 200 and (b"content-type", b"text/javascript") in sent[0]["headers"]
    assert b"htmx" in sent[1]["body"]
    # "a" * 300: longer than a file name may be (before: OSError, a 500 and a traceback for anyone who asked).
    for name in (
        "../site.py",
        "vendor/../../site.py",
        ".hidden",
        "",
        "nope.js",
        "vendor",
        "a" * 300,
        "vendor/" + "b" * 300,
    ):
        with pytest.raises(ApiError) as info:
            await web.send_static(send, name)
        assert info.value.status == 404


def test_the_cookie_is_httponly_strict_and_secure_over_https():
    name, value = web.set_cookie("mh_console", "v", secure=True, max_age=60)
    assert name == b"set-cookie"
    assert value == b"mh_console=v; Path=/console; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
    assert b"Secure" not in web.set_cookie("mh_console", "v", secure=False, max_age=60)[1]
    assert web.https({"scheme": "https", "headers": []})
    assert web.https({"scheme": "http", "headers": [(b"x-forwarded-proto", b"https")]})
    assert not web.https({"scheme": "http", "headers": []})


def test_the_console_section_is_checked_and_can_turn_the_console_off():
    with pytest.raises(ConfigError, match=r"console.session_ttl_s"):
        parse_config(BASE + "console: {session_ttl_s: 0}\n")
    with pytest.raises(ConfigError, match=r"console.*unknown"):
        parse_config(BASE + "console: {colour: blue}\n")
    served = {r.path for r in build_app(parse_config(BASE)).table.routes}
    assert {"/console", "/console/{path}"} <= served
    off = {r.path for r in build_app(parse_config(BASE + "console: {enabled: false}\n")).table.routes}
    assert not {p for p in off if p.startswith("/console")}


def test_single_sign_on_names_a_trusted_issuer_whose_audience_is_the_client():
    issuer = """
identity:
  oidc:
    - {name: corp, issuer: "https://idp.example/realms/corp", audiences: [multihome-console], claims: {tenant: tid}}
"""
    good = BASE + issuer + "console: {oidc: {issuer: corp, client_id: multihome-console}}\n"
    assert parse_config(good).console.oidc.scopes == ["openid", "profile"]
    with pytest.raises(
        ConfigError, match=r"console.oidc.issuer: 'other' is not an identity.oidc issuer \(known: corp\)"
    ):
        parse_config(BASE + issuer + "console: {oidc: {issuer: other, client_id: multihome-console}}\n")
    with pytest.raises(ConfigError, match=r"console.oidc.client_id: 'web' is not among identity.oidc 'corp' audiences"):
        parse_config(BASE + issuer + "console: {oidc: {issuer: corp, client_id: web}}\n")


def _apply(jar: dict[str, str], headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The cookies a browser holding `jar` holds after it is sent `headers` (Max-Age=0 removes one)."""
    jar = dict(jar)
    for _, value in headers:
        pair, *attributes = value.decode().split("; ")
        name, _, cookie = pair.partition("=")
        assert len(pair) <= 4000  # a browser drops a cookie whose name and value pass 4,096 bytes
        assert {"Path=/console", "HttpOnly", "SameSite=Strict"} <= set(attributes)
        if "Max-Age=0" in attributes:
            jar.pop(name, None)
        else:
            jar[name] = cookie
    return jar


def _scope(jar: dict[str, str]) -> dict:
    return {"headers": [(b"cookie", "; ".join(f"{k}={v}" for k, v in jar.items()).encode())]}


def test_a_long_session_cookie_is_sent_in_parts_a_browser_keeps():
    """A sealed ID token with a person's every group is longer than the 4,096 bytes a browser keeps of a
    cookie (tests/e2e/test_console_sso.py signs one in through Chromium)."""
    short = web.set_cookie_parts(_scope({}), "mh_console", "abc", secure=False, max_age=60)
    assert short == [web.set_cookie("mh_console", "abc", secure=False, max_age=60)]  # one cookie, as before
    value = "A" * 9000 + "B"
    jar = _apply({"other": "x"}, web.set_cookie_parts(_scope({}), "mh_console", value, secure=True, max_age=60))
    assert set(jar) == {"other", "mh_console", "mh_console_1", "mh_console_2"}
    assert web.cookie_parts(_scope(jar), "mh_console") == value
    # A part missing, or a count out of bounds: no session (the login form), never a wrong one.
    assert web.cookie_parts(_scope({k: v for k, v in jar.items() if k != "mh_console_1"}), "mh_console") is None
    assert web.cookie_parts(_scope({**jar, "mh_console": "99.A"}), "mh_console") is None
    # A shorter session after a longer one clears the longer one's further parts; logout clears them all.
    shorter = _apply(jar, web.set_cookie_parts(_scope(jar), "mh_console", "xyz", secure=True, max_age=60))
    assert shorter == {"other": "x", "mh_console": "xyz"}
    assert _apply(jar, web.clear_cookie_parts(_scope(jar), "mh_console", secure=False)) == {"other": "x"}
    with pytest.raises(ValueError, match="parts"):
        web.set_cookie_parts(_scope({}), "mh_console", "A" * 60_000, secure=False, max_age=60)
