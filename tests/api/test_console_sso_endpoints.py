"""The console's single sign-on talks to the identity provider's discovery document and token endpoint as
the gateway talks to its JWKS (identity/jwks.py): the document must name the configured issuer, an endpoint
it names must be https (http only on loopback), redirects are not followed (the client secret and the code
go to the token endpoint the document names, nowhere else), and an answer is read up to a bound."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from multihome.api.console.session import Sessions
from multihome.api.console.sso import SingleSignOn, SsoError
from multihome.config.console import ConsoleOidc

pytestmark = pytest.mark.anyio
SECRET = "console-client-secret-MARKER"


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Provider:
    """A scripted identity provider: `discovery` is what its discovery document says; every form posted is kept."""

    def __init__(self) -> None:
        self.discovery: dict = {}
        self.posted: dict[str, dict] = {}
        self.base = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/realm/.well-known/openid-configuration":
            return web.json_response(self.discovery)
        if request.method == "POST":
            self.posted[path] = dict(await request.post())
        if path == "/token":
            return web.json_response({"id_token": "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"})
        if path == "/token-moved":
            raise web.HTTPTemporaryRedirect(self.base + "/elsewhere")  # 307: a client that follows posts again
        if path == "/elsewhere":
            return web.json_response({"id_token": "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"})
        if path == "/token-huge":
            return web.json_response({"id_token": "eyJhbGciOiJSUzI1NiJ9.e30.c2ln", "pad": "x" * (2 << 20)})
        return web.json_response({"error": "not found"}, status=404)


@pytest.fixture
async def idp():
    provider = Provider()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", provider.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    provider.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    provider.discovery = {
        "issuer": provider.base + "/realm",
        "authorization_endpoint": provider.base + "/auth",
        "token_endpoint": provider.base + "/token",
    }
    yield provider
    await runner.cleanup()


def sso(idp: Provider, monkeypatch) -> SingleSignOn:
    monkeypatch.setenv("MH_TEST_CONSOLE_SECRET", SECRET)
    cfg = ConsoleOidc(issuer="local", client_id="console", client_secret_env="MH_TEST_CONSOLE_SECRET")
    return SingleSignOn(cfg, idp.base + "/realm", Sessions(b"k" * 32, 3600))


async def test_the_ordinary_flow_posts_the_code_to_the_token_endpoint(idp, monkeypatch):
    s = sso(idp, monkeypatch)
    location, cookie = await s.start("http://gw/console/oidc/callback", None)
    assert location.startswith(idp.base + "/auth?")
    state = dict(p.split("=", 1) for p in location.split("?", 1)[1].split("&"))["state"]
    assert await s.token(s.pending(cookie, state), "the-code") == "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"
    assert idp.posted["/token"]["client_secret"] == SECRET and idp.posted["/token"]["code"] == "the-code"


@pytest.mark.parametrize(
    "change",
    [
        {"issuer": "https://someone-else.example.com/realm"},  # the document of another issuer
        {"token_endpoint": "http://idp.example.com/token"},  # the secret and the code in clear, off this host
        {"authorization_endpoint": "javascript:alert(1)"},
    ],
)
async def test_a_discovery_document_naming_another_issuer_or_a_cleartext_endpoint_is_refused(idp, monkeypatch, change):
    idp.discovery.update(change)
    with pytest.raises(SsoError, match="discovery document"):
        await sso(idp, monkeypatch).start("http://gw/console/oidc/callback", None)


async def test_a_token_endpoint_that_redirects_is_not_followed_with_the_secret(idp, monkeypatch):
    idp.discovery["token_endpoint"] = idp.base + "/token-moved"
    s = sso(idp, monkeypatch)
    _, cookie = await s.start("http://gw/console/oidc/callback", None)
    pending = s.pending(cookie, json.loads(s.sessions.unseal(cookie, b"multihome-console-sso-v1"))["state"])
    with pytest.raises(SsoError, match="did not issue an ID token"):
        await s.token(pending, "the-code")
    assert "/token-moved" in idp.posted and "/elsewhere" not in idp.posted  # the secret went nowhere else


async def test_a_token_answer_past_the_bound_is_refused(idp, monkeypatch):
    idp.discovery["token_endpoint"] = idp.base + "/token-huge"
    s = sso(idp, monkeypatch)
    _, cookie = await s.start("http://gw/console/oidc/callback", None)
    pending = s.pending(cookie, json.loads(s.sessions.unseal(cookie, b"multihome-console-sso-v1"))["state"])
    with pytest.raises(SsoError, match="did not issue an ID token"):
        await asyncio.wait_for(s.token(pending, "the-code"), 30)


async def test_an_id_token_that_is_no_jwt_fails_the_nonce_check_not_the_page(idp, monkeypatch):
    # The authenticator takes a bearer that is not JWT-shaped for an API key: a token endpoint answering one
    # that happens to be valid got past it, and the nonce check's decode raised (a 500 on the callback).
    s = sso(idp, monkeypatch)
    _, cookie = await s.start("http://gw/console/oidc/callback", None)
    pending = s.pending(cookie, json.loads(s.sessions.unseal(cookie, b"multihome-console-sso-v1"))["state"])
    with pytest.raises(SsoError, match="not issued for this sign-on"):
        s.check_nonce("mh_key_0123456789abcdef", pending)
