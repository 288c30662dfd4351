"""No input from a tenant makes the gateway connect anywhere its config does not name (SSRF).

Where the gateway connects: the upstreams (providers.*.endpoint, via routing/attempts.py and the
health probes), OIDC discovery and JWKS (identity.oidc, jwks.py), the OTLP exporter (telemetry),
the clouds' own credential services (Entra, Google OAuth, AWS STS), all named by the config. What a
tenant controls: request bodies and headers on both doors, bearer tokens, and admin API bodies.
Each test points such inputs at a loopback "canary" listener and checks nothing ever connects to
it: image URLs are passed on or refused, never fetched; a token's iss, jku or x5u names no address
to fetch; admin fields are stored, never dereferenced; and an upstream's redirect is not followed
(it would also hand the provider key, which aiohttp keeps across origins, to the redirect target).
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import httpx
import jwt
import openai
import pytest

from builders import api_keys, breakers, config, deployment, groups, simulated

from .fleet import ADMIN_KEY, CHAT_GROUPS, CLIENT_KEY, fleet
from .processes import Gateway
from .stores import head_database


class Canary:
    """A loopback TCP listener that counts every connection made to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(1)
            try:
                self.connections.append(conn.recv(4096))
            except OSError:
                self.connections.append(b"")
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def canary():
    c = Canary()
    yield c
    c.close()


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ssrf")
    head_database(request, "sqlite", tmp)  # fleet_config's file, at the head revision
    with fleet(tmp) as f:
        yield f


def settled(world, canary) -> list[bytes]:
    """What reached the canary once the gateway has answered everything sent so far."""
    httpx.get(world.url + "/healthz", timeout=10)
    return canary.connections


def test_image_and_file_urls_are_never_fetched_by_the_gateway(world, canary):
    oa = openai.OpenAI(base_url=world.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)
    targets = [
        f"{canary.url}/cat.png",
        f"{canary.url}/cat.png?x=1",
        f"http://localhost:{canary.port}/a.jpg",
        f"https://127.0.0.1:{canary.port}/a.webp",
        f"gs://127.0.0.1:{canary.port}/a.png",
    ]
    answers = []
    for group in CHAT_GROUPS:
        for url in targets:
            content = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]
            answers.append(
                _status(
                    lambda: oa.chat.completions.create(model=group, messages=[{"role": "user", "content": content}])
                )
            )
        file_part = {"type": "file", "file": {"file_data": f"{canary.url}/doc.pdf", "filename": "doc.pdf"}}
        answers.append(
            _status(
                lambda: oa.chat.completions.create(model=group, messages=[{"role": "user", "content": [file_part]}])
            )
        )
    an = anthropic.Anthropic(base_url=world.url, api_key=CLIENT_KEY, max_retries=0, timeout=20)
    for group in CHAT_GROUPS:
        block = {"type": "image", "source": {"type": "url", "url": f"{canary.url}/dog.png"}}
        answers.append(
            _status(
                lambda: an.messages.create(
                    model=group,
                    max_tokens=8,
                    messages=[{"role": "user", "content": [block, {"type": "text", "text": "and this?"}]}],
                )
            )
        )
    # Served by providers that take URLs (passed on as data for the provider), refused by the rest.
    assert set(answers) <= {200, 400}, answers
    assert 200 in answers and 400 in answers
    assert settled(world, canary) == []


def test_urls_in_other_request_fields_are_never_dereferenced(world, canary):
    http = httpx.Client(base_url=world.url, timeout=20, headers={"authorization": f"Bearer {CLIENT_KEY}"})
    ref = {"$ref": f"{canary.url}/schema.json"}
    tools = [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": ref}}}}
    ]
    bodies = [
        {
            "model": g,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": tools,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": ref}},
        }
        for g in CHAT_GROUPS
    ]
    bodies += [
        {"model": f"{canary.url}/model", "messages": [{"role": "user", "content": "hi"}]},
        {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "hi"}],
            "user": canary.url,
            "multihome": {"route": {"deployments": [canary.url]}},
        },
    ]
    for body in bodies:
        assert http.post("/v1/chat/completions", json=body).status_code < 500
    assert (
        http.post("/v1/chat/completions", json=bodies[0], headers={"x-multihome-deployments": canary.url}).status_code
        == 400
    )
    assert http.post("/v1/route/explain", json=bodies[0]).status_code == 200
    assert settled(world, canary) == []


def test_tokens_naming_an_address_make_the_gateway_fetch_nothing(world, canary):
    """The issuer is picked from the configured ones by exact match of `iss`; `jku`, `x5u` and
    `kid` are never used to find keys. A token pointing anywhere costs no fetch."""
    http = httpx.Client(base_url=world.url, timeout=20)
    issuer = world.issuer
    key = issuer.keys[issuer.default_kid].private
    claims = issuer.claims(tenant="t1", sub="mallory")
    tokens = [
        jwt.encode({**claims, "iss": canary.url}, key, algorithm="RS256", headers={"kid": issuer.default_kid}),
        jwt.encode({**claims, "iss": f"{canary.url}/realms/test"}, key, algorithm="RS256"),
        jwt.encode(claims, key, algorithm="RS256", headers={"jku": f"{canary.url}/jwks.json", "kid": "other"}),
        jwt.encode(claims, key, algorithm="RS256", headers={"x5u": f"{canary.url}/cert.pem", "kid": "other"}),
        jwt.encode(claims, key, algorithm="RS256", headers={"kid": f"{canary.url}/key"}),
    ]
    for token in tokens:
        resp = http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {token}"},
        )
        assert resp.status_code == 401, resp.text
    assert settled(world, canary) == []


def test_admin_inputs_are_stored_never_dereferenced(world, canary):
    admin = httpx.Client(base_url=world.url, timeout=20, headers={"authorization": f"Bearer {ADMIN_KEY}"})
    tenant = admin.post(
        "/admin/v1/tenants",
        json={
            "name": canary.url,
            "metadata": {"webhook": f"{canary.url}/hook", "issuer": canary.url, "jwks_uri": f"{canary.url}/jwks"},
        },
    ).json()["id"]
    assert (
        admin.post(
            f"/admin/v1/tenants/{tenant}/keys", json={"name": "k", "metadata": {"callback": f"{canary.url}/cb"}}
        ).status_code
        == 201
    )
    assert (
        admin.post(
            "/admin/v1/token-revocations", json={"kind": "subject", "issuer": canary.url, "subject": "x"}
        ).status_code
        == 400
    )  # not a configured issuer
    admin.post(
        f"/admin/v1/tenants/{tenant}/policies",
        json={"scope": "tenant", "description": f"see {canary.url}", "rules": []},
    )
    admin.post("/admin/v1/policy/explain", json={"tenant_id": tenant, "model": canary.url})
    assert settled(world, canary) == []


REDIRECTED = {"oa": "openai", "an": "anthropic", "gm": "gemini", "az": "azure"}  # name -> kind


def redirect_config(redirector: str) -> dict:
    """One provider of each kind, each its own deployment and group, all at the redirector."""
    return config(
        server=api_keys("MH_SSRF_CLIENT_KEY"),
        routing={**breakers(2, cooldown_s=0.2), "health_probe": {"interval_s": 0.2, "timeout_s": 2}},
        providers={n: simulated(kind, redirector, key_env="MH_SSRF_UPSTREAM_KEY") for n, kind in REDIRECTED.items()},
        deployments={n: deployment(n, "m") for n in REDIRECTED},
        model_groups=groups({n: n for n in REDIRECTED}, retries=0),
    )


class _Redirector(BaseHTTPRequestHandler):
    """An upstream (named by the config) that answers every call with a redirect to the canary."""

    target = ""
    calls = 0

    def do_POST(self) -> None:
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(307)
        self.send_header("location", self.target)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_an_upstream_redirect_is_not_followed(tmp_path, canary):
    _Redirector.target = f"{canary.url}/stolen"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    redirector = f"http://127.0.0.1:{server.server_address[1]}"
    env = {"MH_SSRF_CLIENT_KEY": "ssrf-client", "MH_SSRF_UPSTREAM_KEY": "ssrf-upstream-provider-key"}
    gw = Gateway(redirect_config(redirector), tmp_path, env)
    try:
        oa = openai.OpenAI(base_url=gw.url + "/v1", api_key="ssrf-client", max_retries=0, timeout=20)
        refused = []
        for group in ("oa", "an", "gm", "az"):
            for stream in (False, True):  # the second failure opens the group's breaker
                with pytest.raises(openai.APIStatusError) as info:
                    oa.chat.completions.create(model=group, messages=[{"role": "user", "content": "hi"}], stream=stream)
                refused.append((info.value.status_code, info.value.message))
        assert canary.connections == [], [c[:200] for c in canary.connections]
        for status, message in refused:
            assert status == 503 and "http_307" in message, message  # the attempt says why
        # The breakers are open now: the health probes knock on the redirector, and go no further.
        wanted, deadline = _Redirector.calls + 8, time.monotonic() + 20
        while _Redirector.calls < wanted:
            assert time.monotonic() < deadline, "the health probes never reached the upstream"
            time.sleep(0.05)
        assert httpx.get(gw.url + "/healthz").status_code == 200
        assert canary.connections == [], [c[:200] for c in canary.connections]
    finally:
        gw.stop()
        server.shutdown()


def _status(call) -> int:
    try:
        call()
        return 200
    except (openai.APIStatusError, anthropic.APIStatusError) as err:
        return err.status_code


def test_the_canary_would_see_a_fetch(canary):
    """The canary works: a connection to it is counted (so an empty list above means none came)."""
    before = len(canary.connections)
    with socket.create_connection(("127.0.0.1", canary.port)) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
    deadline = time.monotonic() + 60
    while len(canary.connections) == before:
        assert time.monotonic() < deadline, "the canary missed a connection"
        time.sleep(0.01)
    assert canary.connections.pop().startswith(b"GET / ")
