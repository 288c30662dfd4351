"""No secret the gateway holds or is shown ever comes back out of it.

A representative slice of traffic through the real gateway (tests/e2e/fleet.py: every simulated
cloud, SQLite storage, the audit trail, OIDC, every logger at DEBUG), with recognisable fake
secrets: the upstream provider keys, the AWS secret access key, the bootstrap admin key, the
static client key, a managed key created through the admin API, an OIDC token, the header value
of an MCP server registered for a tenant. The OpenAI
upstream's key is set through the admin API (`auth.api_key_from: store`, sealed in the database)
and the static keys' tenant has content capture on, so the keyring seals for real: the local KMS's
key-encryption keys and every data key (unwrapped from the database with the key file) join the
secrets, in hex, base64 and base64url. Then none of them may appear in any response body or
header (except the managed key's one-time `key` on create), any log line, any audit file, or any
row of any table of the database (nor, raw, anywhere in its files). A managed key's `prefix` is
shown by design; it must be shorter than the secret and is checked not to be the secret.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3

import anthropic
import httpx
import httpx2
import openai
import pytest

from multihome.crypto.backends.local import LocalKms
from multihome.crypto.keyring import kms_context

from .fleet import ADMIN_KEY, CLIENT_KEY, SECRETS, fleet

USER = [{"role": "user", "content": "Say hello"}]
MCP_SECRET = "mcp-server-header-secret-5e0c2a7d9f"


class Recorder:
    """httpx event hook: every response's status, headers and body, as the client received them."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, dict, bytes]] = []
        self.allowed: dict[int, str] = {}  # index -> the one secret that response may carry (key creation)

    def __call__(self, response: httpx.Response) -> None:
        response.read()
        self.seen.append(
            (
                f"{response.request.method} {response.request.url}",
                response.status_code,
                dict(response.headers),
                response.content,
            )
        )

    def client(self, http=httpx, **kwargs):
        """A client of `http` (httpx; httpx2 for the anthropic SDK) that records every response."""
        return http.Client(event_hooks={"response": [self]}, timeout=20, **kwargs)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("no-secrets")

    def sealed(cfg: dict) -> None:  # the OpenAI upstream's key comes from the admin API's sealed store
        cfg["providers"]["openai"]["auth"] = {"api_key_from": "store"}

    kms = {"local": {"key_file": str(tmp / "kms.key")}}
    with fleet(tmp, edit=sealed, kms=kms, capture={"tenants": ["default"]}) as f:
        yield f


def test_no_secret_leaves_the_gateway(world):
    rec = Recorder()
    url = world.url
    oa = openai.OpenAI(base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=0, http_client=rec.client())
    admin = rec.client(base_url=url, headers={"authorization": f"Bearer {ADMIN_KEY}"})
    # The OpenAI upstream's key, set through the admin API (sealed before it is stored), then read back.
    assert admin.put("/admin/v1/provider-credentials/openai", json={"api_key": SECRETS["MH_FLEET_OPENAI_KEY"]}).json()[
        "set"
    ]
    admin.get("/admin/v1/provider-credentials")
    admin.get("/admin/v1/provider-credentials/openai")

    # The OpenAI door: every cloud, unary and streamed; embeddings on three clouds.
    for group in ("gpt-4o", "claude", "bedrock", "gemini"):
        assert oa.chat.completions.create(model=group, messages=USER).choices
        assert "".join(
            c.choices[0].delta.content or ""
            for c in oa.chat.completions.create(model=group, messages=USER, stream=True)
            if c.choices
        )
    assert oa.chat.completions.create(model="gpt-4o", messages=USER, extra_headers={"x-multihome-deployments": "az"})
    for group in ("embed", "titan", "gemini-embed"):
        assert oa.embeddings.create(model=group, input="hello").data

    # The Anthropic door, unary and streamed.
    an = anthropic.Anthropic(base_url=url, api_key=CLIENT_KEY, max_retries=0, http_client=rec.client(httpx2))
    assert an.messages.create(model="claude", max_tokens=16, messages=USER).content
    with an.messages.stream(model="bedrock", max_tokens=16, messages=USER) as stream:
        assert stream.get_final_message().content

    # The admin API: a tenant, a managed key (its secret shown once), an OIDC caller of that tenant.
    tenant = admin.post("/admin/v1/tenants", json={"name": "acme", "metadata": {"owner": "ops"}}).json()["id"]
    created = admin.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "app"})
    rec.allowed[len(rec.seen) - 1] = "managed"
    managed = created.json()["key"]
    prefix = created.json()["prefix"]
    assert prefix and len(prefix) < len(managed) and prefix != managed
    mk = openai.OpenAI(base_url=url + "/v1", api_key=managed, max_retries=0, http_client=rec.client())
    assert mk.chat.completions.create(model="gemini", messages=USER).choices
    token = world.issuer.mint(tenant=tenant, sub="alice", roles=["ai-admins"], jti="jti-no-secrets")
    jwt_client = openai.OpenAI(base_url=url + "/v1", api_key=token, max_retries=0, http_client=rec.client())
    assert jwt_client.chat.completions.create(model="gpt-4o", messages=USER).choices
    admin.get(f"/admin/v1/tenants/{tenant}/keys")
    admin.get("/admin/v1/whoami")
    admin.post("/admin/v1/token-revocations", json={"kind": "jti", "issuer": "local", "jti": "jti-no-secrets"})
    # An MCP server registered for the tenant: its header value sealed, only the header's name shown.
    servers = f"/admin/v1/tenants/{tenant}/mcp-servers"
    mcp_header = {"Authorization": f"Bearer {MCP_SECRET}"}
    registered = admin.post(servers, json={"name": "crm", "url": "https://crm.example.com/mcp", "headers": mcp_header})
    assert registered.status_code == 201 and registered.json()["header_names"] == ["Authorization"]
    admin.get(servers)
    admin.patch(servers + "/crm", json={"headers": {"X-Api-Key": MCP_SECRET + "-2"}})
    admin.get(servers + "/crm")
    admin.post(servers, json={"name": "bad", "url": "ftp://x", "headers": {"X": MCP_SECRET}})  # 400

    # Failures: a bad body, an unknown model, keys that are wrong, revoked or truncated, an
    # upstream that fails, an upstream that refuses the gateway's own key, a revoked token.
    bad = rec.client(
        base_url=url, headers={"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}
    )
    bad.post("/v1/chat/completions", content=b'{"model": "gpt-4o", "messages": [')
    bad.post("/v1/chat/completions", json={"model": "nope", "messages": USER})
    bad.post("/v1/messages", json={"model": "claude", "messages": USER})
    for key in (CLIENT_KEY + "x", managed[:-1], ADMIN_KEY[:-2], SECRETS["MH_FLEET_OPENAI_KEY"]):
        rec.client(base_url=url, headers={"authorization": f"Bearer {key}"}).post(
            "/v1/chat/completions", json={"model": "gpt-4o", "messages": USER}
        )
    rec.client(base_url=url, headers={"x-api-key": CLIENT_KEY[:-1]}).post(
        "/v1/messages", json={"model": "claude", "max_tokens": 5, "messages": USER}
    )
    admin.delete(f"/admin/v1/tenants/{tenant}/keys/{created.json()['id']}")
    with pytest.raises(openai.AuthenticationError):
        mk.chat.completions.create(model="gemini", messages=USER)
    with pytest.raises(openai.AuthenticationError):
        jwt_client.chat.completions.create(model="gpt-4o", messages=USER)
    world.sims["openai"].fault(status=500)
    with pytest.raises(openai.APIStatusError):
        oa.chat.completions.create(model="gpt-4o", messages=USER, extra_headers={"x-multihome-deployments": "oa"})
    world.sims["openai"].clear_faults()
    world.sims["anthropic"].fault(status=401)
    with pytest.raises(openai.APIStatusError) as refused:
        oa.chat.completions.create(model="claude", messages=USER)
    assert refused.value.status_code == 502  # the gateway's own credentials, not the client's
    world.sims["anthropic"].clear_faults()
    admin.get("/admin/v1/audit/events", params={"limit": 500})
    admin.get("/admin/v1/events")

    admin.put("/admin/v1/provider-credentials/azure", json={"api_key": SECRETS["MH_FLEET_AZURE_KEY"]})  # 409
    admin.put("/admin/v1/provider-credentials/openai", json={"api_key": 12345})  # 400
    _wait_for_captures(world)

    secrets = {
        **SECRETS,
        "managed key": managed,
        "managed key without its prefix": managed[len(prefix) + 3 :],
        "OIDC token": token,
        "OIDC token signature": token.rsplit(".", 1)[1],
        "MCP server header": MCP_SECRET,
    }
    keys = _key_material(world)
    assert len(keys) >= 3, "expected the KEKs of two owners and their data keys"
    for i, key in enumerate(keys):
        secrets |= {f"key {i} ({form})": text for form, text in _forms(key).items()}
    assert len(rec.seen) > 30
    raw = b"".join(p.read_bytes() for p in world.tmp.glob("multihome.db*"))
    leaks = [f"the database files hold key {i} raw" for i, key in enumerate(keys) if key in raw]
    leaks += (
        _in_responses(rec, secrets)
        + _in_text("log", world.log(), secrets)
        + _in_audit(world, secrets)
        + _in_database(world, secrets)
    )
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)


def _wait_for_captures(world) -> None:
    """The capture writer works off the hot path: wait until it has written the static tenant's calls."""
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with sqlite3.connect(world.db) as db:
            if db.execute("SELECT count(*) FROM captures WHERE tenant_id = 'default'").fetchone()[0] >= 10:
                return
        time.sleep(0.1)
    raise AssertionError("content capture wrote nothing")


def _key_material(world) -> list[bytes]:
    """Every key-encryption key in the local KMS's key file, and every data key in the database,
    unwrapped with it: what an attacker must never find."""
    key_file = world.tmp / "kms.key"
    keks = [
        base64.b64decode(v)
        for kek in json.loads(key_file.read_text())["keys"].values()
        for v in kek["versions"].values()
    ]
    kms = LocalKms(key_file)
    with sqlite3.connect(world.db) as db:
        rows = db.execute("SELECT id, tenant_id, purpose, kek_id, kek_version, wrapped FROM data_keys").fetchall()
    purposes = {row[2] for row in rows}
    assert {"credentials", "capture"} <= purposes, purposes
    data_keys = [
        asyncio.run(kms.decrypt(kek_id, version, bytes(wrapped), kms_context(tenant, purpose, id_)))
        for id_, tenant, purpose, kek_id, version, wrapped in rows
    ]
    return keks + data_keys


def _forms(key: bytes) -> dict[str, str]:
    return {
        "hex": key.hex(),
        "HEX": key.hex().upper(),
        "base64": base64.b64encode(key).decode(),
        "base64url": base64.urlsafe_b64encode(key).decode().rstrip("="),
    }


def _in_responses(rec: Recorder, secrets: dict[str, str]) -> list[str]:
    leaks = []
    for i, (what, status, headers, body) in enumerate(rec.seen):
        allowed = rec.allowed.get(i)
        if allowed == "managed":
            body = json.dumps({k: v for k, v in json.loads(body).items() if k != "key"}).encode()
        text = body.decode(errors="replace") + "\n" + "\n".join(f"{k}: {v}" for k, v in headers.items())
        leaks += [f"response to {what} ({status}) holds the {name}" for name, s in secrets.items() if s in text]
    return leaks


def _in_text(where: str, text: str, secrets: dict[str, str]) -> list[str]:
    return [f"{where} holds the {name}" for name, s in secrets.items() if s in text]


def _in_audit(world, secrets: dict[str, str]) -> list[str]:
    files = [p for p in world.audit_dir.rglob("*") if p.is_file()]
    assert files, "the audit trail wrote nothing"
    leaks = []
    for path in files:
        leaks += _in_text(f"audit file {path.name}", path.read_bytes().decode(errors="replace"), secrets)
    return leaks


def _in_database(world, secrets: dict[str, str]) -> list[str]:
    leaks, rows = [], 0
    with sqlite3.connect(world.db) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                rows += 1
                text = " ".join(v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in row)
                leaks += _in_text(f"table {table}", text, secrets)
    assert rows > 10, tables
    return leaks
