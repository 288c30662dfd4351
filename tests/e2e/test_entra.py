"""Azure with Entra ID: azure-identity fetches a managed-identity token; the gateway caches and sends it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import openai
import pytest

from builders import api_keys, simulated, single

from .conftest import CLIENT_KEY
from .processes import Gateway

TOKEN = "entra-access-token-xyz"
IDENTITY_HEADER = "identity-header-secret"


class _TokenEndpoint(BaseHTTPRequestHandler):
    """Speaks the App Service managed-identity protocol that azure-identity uses (IDENTITY_ENDPOINT)."""

    calls: list[dict] = []

    def do_GET(self):
        query = parse_qs(urlparse(self.path).query)
        _TokenEndpoint.calls.append(
            {"resource": query.get("resource", [""])[0], "header": self.headers.get("X-IDENTITY-HEADER")}
        )
        if self.headers.get("X-IDENTITY-HEADER") != IDENTITY_HEADER:
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps(
            {
                "access_token": TOKEN,
                "expires_on": str(int(time.time()) + 3600),
                "resource": query["resource"][0],
                "token_type": "Bearer",
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextmanager
def managed_identity() -> Iterator[dict[str, str]]:
    """A managed-identity token endpoint serving TOKEN; yields the environment that points
    azure-identity's DefaultAzureCredential at it (other e2e modules use it for their Entra providers)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenEndpoint)
    _TokenEndpoint.calls = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {
            "IDENTITY_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}/msi/token",
            "IDENTITY_HEADER": IDENTITY_HEADER,
        }
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def token_endpoint():
    with managed_identity() as env:
        yield env["IDENTITY_ENDPOINT"]


def _entra_gateway(sim, token_endpoint: str, tmp_path) -> Gateway:
    """A gateway whose Azure provider authenticates with Entra ID through azure-identity's managed identity."""
    config = single(
        simulated("azure", sim.url, auth={"entra": {}}),
        model="gpt-4o-entra",
        names=("az", "d", "gpt-4o"),
        server=api_keys("MH_TEST_CLIENT_KEY"),
    )
    env = {"MH_TEST_CLIENT_KEY": CLIENT_KEY, "IDENTITY_ENDPOINT": token_endpoint, "IDENTITY_HEADER": IDENTITY_HEADER}
    return Gateway(config, tmp_path, env)


def test_entra_token_is_fetched_once_and_sent_as_bearer(token_endpoint, tmp_path, simulator):
    sim = simulator("azure", "azure-entra", "--entra-token-env", "SIM_ENTRA_TOKEN", env={"SIM_ENTRA_TOKEN": TOKEN})
    gw = _entra_gateway(sim, token_endpoint, tmp_path)
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
        for _ in range(3):
            reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content
        assert len(_TokenEndpoint.calls) == 1, "the token is cached, not fetched per call"
        assert _TokenEndpoint.calls[0]["resource"] == "https://cognitiveservices.azure.com"
        assert [r["auth"] for r in sim.requests()] == [True, True, True]
    finally:
        log = gw.stop()
    assert TOKEN not in log and IDENTITY_HEADER not in log


def test_wrong_entra_token_is_an_operator_problem_not_a_client_one(token_endpoint, tmp_path, simulator):
    sim = simulator(
        "azure", "azure-entra", "--entra-token-env", "SIM_ENTRA_TOKEN", env={"SIM_ENTRA_TOKEN": "another-token"}
    )
    gw = _entra_gateway(sim, token_endpoint, tmp_path)
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert info.value.status_code == 502
        assert "credentials" in info.value.message
    finally:
        gw.stop()
