"""Provider credentials through the admin API, in process (SQLite, the local KMS, the audit trail):
set, rotate and delete a provider's API key; the adapter sends the new key from the next call on;
no answer, audit file or database row holds the key; who may; a KMS that cannot be reached is a
503 naming it with nothing stored. The end-to-end run with a real simulator is
tests/e2e/test_kms_wiring.py."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat

import anyio
import httpx
import pytest

from admin_http import error, ok, running
from ports import free_port

pytestmark = pytest.mark.anyio
ADMIN_KEY = "mh-bootstrap-admin-key-for-credentials"
SECRET = "sk-provider-secret-0123456789abcdef"
ROTATED = "sk-provider-rotated-fedcba9876543210"

CONFIG = """
storage: {{url: "sqlite+aiosqlite:///{tmp}/mh.db"}}
audit: {{dir: "{tmp}/audit"}}
identity: {{admin_key_env: MH_TEST_CRED_ADMIN}}
kms: {kms}
providers:
  sealed: {{kind: openai, endpoint: "http://127.0.0.1:9/v1", auth: {{api_key_from: store}}}}
  plain: {{kind: openai, endpoint: "http://127.0.0.1:9/v1"}}
deployments:
  d: {{provider: sealed, model: m}}
  e: {{provider: plain, model: m}}
model_groups:
  g: {{deployments: [d, e]}}
"""


def _closed_port() -> int:
    # Not port 0: a connect to a closed port in the kernel's ephemeral range can be given that same
    # port as its source and connect to itself (TCP simultaneous open), then wait for its own answer.
    return free_port()


@pytest.fixture
async def gw(tmp_path, monkeypatch, sqlite_database):
    monkeypatch.setenv("MH_TEST_CRED_ADMIN", ADMIN_KEY)
    sqlite_database("mh.db")  # CONFIG's file, at the head revision (a copy: no migration per test)
    kms = f'{{local: {{key_file: "{tmp_path}/kms.key"}}}}'
    async with running(CONFIG.format(tmp=tmp_path, kms=kms)) as app:
        yield app, _client(app, ADMIN_KEY)


def _client(app, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gw", headers={"authorization": f"Bearer {key}"}
    )


def _sent_key(app) -> str | None:
    """The authorization header the `sealed` provider's adapter sends now."""
    adapter = app.pipeline.catalog.deployments["d"].adapter
    return adapter._headers.get("authorization")


async def test_start_up_makes_no_key_until_something_is_sealed(gw, tmp_path):
    app, admin = gw
    key_file = tmp_path / "kms.key"
    assert not key_file.exists()  # opened, nothing sealed: no key file, no KEK, no KMS call
    with sqlite3.connect(tmp_path / "mh.db") as db:
        assert db.execute("SELECT count(*) FROM data_keys").fetchone() == (0,)
    assert _sent_key(app) is None  # nothing stored yet: the provider is called without a key
    # A model call stores nothing sealed (no capture here): it never reaches the keyring.
    chat = await admin.post("/v1/chat/completions", json={"model": "g", "messages": [{"role": "user", "content": "x"}]})
    assert chat.status_code in (502, 503), chat.text  # the upstream's port is closed: it got as far as the attempts
    assert not key_file.exists()
    await ok(await admin.put("/admin/v1/provider-credentials/sealed", json={"api_key": SECRET}))
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600  # the first seal made it
    assert len(json.loads(key_file.read_text())["keys"]) == 1


async def test_a_lost_key_file_is_not_replaced(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MH_TEST_CRED_ADMIN", ADMIN_KEY)
    text = CONFIG.format(tmp=tmp_path, kms=f'{{local: {{key_file: "{tmp_path}/kms.key"}}}}')
    async with running(text) as app:
        await ok(await _client(app, ADMIN_KEY).put("/admin/v1/provider-credentials/sealed", json={"api_key": SECRET}))
    (tmp_path / "kms.key").unlink()  # lost: the database still holds a data key it wrapped
    async with running(text) as app:
        assert _sent_key(app) is None  # the stored key does not open: the adapter has none
        admin = _client(app, ADMIN_KEY)
        refused = error(await admin.put("/admin/v1/provider-credentials/sealed", json={"api_key": ROTATED}), 503)
        assert refused["code"] == "kms_refused" and "kms.key" in refused["message"]
    assert not (tmp_path / "kms.key").exists()
    assert "is missing but 1 data keys wrapped by the local KMS are stored" in caplog.text


async def test_set_rotate_delete(gw, tmp_path):
    app, admin = gw
    listed = await ok(await admin.get("/admin/v1/provider-credentials"))
    assert {v["id"]: (v["api_key_from"], v["set"]) for v in listed["data"]} == {
        "sealed": ("store", False),
        "plain": ("env", False),
    }
    answers = [listed]
    answers.append(view := await ok(await admin.put("/admin/v1/provider-credentials/sealed", json={"api_key": SECRET})))
    assert view["set"] and view["version"] == 1 and view["fingerprint"] == SECRET[-4:]
    assert view["updated_by"] and view["updated_at"]
    assert _sent_key(app) == f"Bearer {SECRET}"  # this replica: from the next call on

    answers.append(
        view := await ok(await admin.put("/admin/v1/provider-credentials/sealed", json={"api_key": ROTATED}))
    )
    assert view["version"] == 2 and view["fingerprint"] == ROTATED[-4:]
    assert _sent_key(app) == f"Bearer {ROTATED}"
    answers.append(await ok(await admin.get("/admin/v1/provider-credentials/sealed")))
    answers.append(await ok(await admin.get("/admin/v1/provider-credentials")))
    # docs/encryption.md: the last 4 characters, none for a key shorter than 16 (4 would be too much of it).
    for key, shown in (("sk-fifteen-char", None), ("sk-sixteen-chars", "hars")):
        answers.append(
            view := await ok(await admin.put("/admin/v1/provider-credentials/sealed", json={"api_key": key}))
        )
        assert view["fingerprint"] == shown and _sent_key(app) == f"Bearer {key}"

    answers.append(await ok(await admin.delete("/admin/v1/provider-credentials/sealed")))
    assert _sent_key(app) is None
    answers.append(gone := await ok(await admin.get("/admin/v1/provider-credentials/sealed")))
    assert gone["set"] is False
    error(await admin.delete("/admin/v1/provider-credentials/sealed"), 404)
    answers.append(await ok(await admin.put("/admin/v1/provider-credentials/sealed", json={"api_key": SECRET})))

    # Nothing shown, written to the trail or stored in clear holds either key.
    trail = "".join(p.read_text() for p in (tmp_path / "audit").glob("*.jsonl"))
    shown = json.dumps(answers)
    for secret in (SECRET, ROTATED, "sk-fifteen-char", "sk-sixteen-chars"):
        assert secret not in shown and secret not in trail
        assert secret.encode() not in _database_bytes(tmp_path)
    events = [json.loads(line) for line in trail.splitlines()]
    actions = [e["body"]["action"] for e in events if e["kind"] == "admin_change"]
    assert actions.count("provider_credential.set") == 5 and actions.count("provider_credential.delete") == 1
    kms = [e["body"] for e in events if e["kind"] == "kms"]
    assert kms and {e["op"] for e in kms} == {"generate"} and kms[0]["purpose"] == "credentials"


def _database_bytes(tmp_path) -> bytes:
    return b"".join(p.read_bytes() for p in tmp_path.glob("mh.db*"))


async def test_refusals(gw):
    app, admin = gw
    conflict = error(await admin.put("/admin/v1/provider-credentials/plain", json={"api_key": SECRET}), 409)
    assert "api_key_from: store" in conflict["message"]
    assert error(await admin.get("/admin/v1/provider-credentials/nope"), 404)["code"] == "not_found"
    bad = error(await admin.put("/admin/v1/provider-credentials/sealed", json={"api_key": 12345678}), 400)
    assert "12345678" not in bad["message"]
    error(await admin.put("/admin/v1/provider-credentials/sealed", json={"api_key": ""}), 400)
    error(await admin.put("/admin/v1/provider-credentials/sealed", json={"key": SECRET}), 400)

    tenant = (await ok(await admin.post("/admin/v1/tenants", json={"name": "acme"}), 201))["id"]
    created = await ok(
        await admin.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "ops", "roles": ["tenant-admin"]}), 201
    )
    tenant_admin = _client(app, created["key"])
    for call in (
        tenant_admin.get("/admin/v1/provider-credentials"),
        tenant_admin.put("/admin/v1/provider-credentials/sealed", json={"api_key": SECRET}),
        tenant_admin.delete("/admin/v1/provider-credentials/sealed"),
    ):
        assert error(await call, 403)["code"] == "insufficient_role"
    assert _sent_key(app) is None


async def test_a_kms_that_cannot_be_reached_is_a_503_and_nothing_is_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("MH_TEST_CRED_ADMIN", ADMIN_KEY)
    monkeypatch.setenv("MH_TEST_VAULT_TOKEN", "not-a-real-token")
    address = f"http://127.0.0.1:{_closed_port()}"
    kms = f'{{backend: vault, vault: {{address: "{address}", token_env: MH_TEST_VAULT_TOKEN, timeout_s: 2}}}}'
    async with running(CONFIG.format(tmp=tmp_path, kms=kms)) as app:
        admin = _client(app, ADMIN_KEY)
        answer = await admin.put("/admin/v1/provider-credentials/sealed", json={"api_key": SECRET})
        refused = error(answer, 503)
        assert refused["code"] == "kms_unavailable" and refused["type"] == "server_error"
        assert "Vault Transit" in refused["message"] and address.split("//")[1] in refused["message"]
        # docs/encryption.md "KMS outage": it says nothing was stored, and when to try again.
        assert "nothing was stored" in refused["message"] and answer.headers["retry-after"] == "5"
        assert (await ok(await admin.get("/admin/v1/provider-credentials/sealed")))["set"] is False
        assert _sent_key(app) is None
    with sqlite3.connect(tmp_path / "mh.db") as db:
        assert db.execute("SELECT count(*) FROM provider_credentials").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM data_keys").fetchone() == (0,)
    trail = [json.loads(line) for p in (tmp_path / "audit").glob("*.jsonl") for line in p.read_text().splitlines()]
    assert not [e for e in trail if e["kind"] == "admin_change"]  # a refused change is no change
    (failed,) = [e["body"] for e in trail if e["kind"] == "kms"]
    assert failed["op"] == "generate" and failed["outcome"] == "unavailable"
    assert SECRET.encode() not in _database_bytes(tmp_path)


async def test_without_storage_there_is_no_keyring(tmp_path, monkeypatch):
    monkeypatch.setenv("MH_TEST_CRED_ADMIN", ADMIN_KEY)
    text = """
server: {api_keys_env: [MH_TEST_CRED_ADMIN]}
providers: {p: {kind: openai, endpoint: "http://127.0.0.1:9/v1"}}
deployments: {d: {provider: p, model: m}}
model_groups: {g: {deployments: [d]}}
"""
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        async with running(text) as app:
            assert app.admin.services.crypto is None
            assert app.pipeline.accounting.capture is None
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "multihome-kms.key").exists()  # a gateway that stores nothing makes no key file


async def test_another_replica_picks_up_a_change_within_refresh_s(tmp_path, monkeypatch):
    import asyncio

    monkeypatch.setenv("MH_TEST_CRED_ADMIN", ADMIN_KEY)
    text = CONFIG.format(tmp=tmp_path, kms=f'{{local: {{key_file: "{tmp_path}/kms.key"}}}}')
    text = text.replace('mh.db"}', 'mh.db", refresh_s: 0.1}')
    async with running(text) as one, running(text) as two:

        async def seen_by_two(expected: str | None) -> None:
            for _ in range(200):
                if _sent_key(two) == expected:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"replica two still sends {_sent_key(two)!r}")

        await ok(await _client(one, ADMIN_KEY).put("/admin/v1/provider-credentials/sealed", json={"api_key": SECRET}))
        await seen_by_two(f"Bearer {SECRET}")
        await ok(await _client(one, ADMIN_KEY).put("/admin/v1/provider-credentials/sealed", json={"api_key": ROTATED}))
        await seen_by_two(f"Bearer {ROTATED}")
        await ok(await _client(one, ADMIN_KEY).delete("/admin/v1/provider-credentials/sealed"))
        await seen_by_two(None)


async def test_a_restarted_gateway_starts_with_the_stored_key(tmp_path, monkeypatch):
    monkeypatch.setenv("MH_TEST_CRED_ADMIN", ADMIN_KEY)
    text = CONFIG.format(tmp=tmp_path, kms=f'{{local: {{key_file: "{tmp_path}/kms.key"}}}}')
    async with running(text) as app:
        await ok(await _client(app, ADMIN_KEY).put("/admin/v1/provider-credentials/sealed", json={"api_key": SECRET}))
    async with running(text) as app:
        assert _sent_key(app) == f"Bearer {SECRET}"  # opened from the store at start-up, before any call
    trail = [json.loads(line) for p in (tmp_path / "audit").glob("*.jsonl") for line in p.read_text().splitlines()]
    assert sorted(e["body"]["op"] for e in trail if e["kind"] == "kms") == ["generate", "unwrap"]  # one chain each


@pytest.fixture
def hung_kms():
    """A KMS address that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("backend", ["aws", "vault"])
async def test_a_kms_that_never_answers_is_a_503_by_kms_timeout_s(backend, hung_kms, tmp_path, monkeypatch):
    # AWS's SDK retried 3 x (5 s connect + 10 s read) before kms.timeout_s; the 1 s deadline must end it.
    monkeypatch.setenv("MH_TEST_CRED_ADMIN", ADMIN_KEY)
    monkeypatch.setenv("MH_TEST_VAULT_TOKEN", "not-a-real-token")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    section = {
        "aws": f'aws: {{region: us-east-1, endpoint: "{hung_kms}"}}',
        "vault": f'vault: {{address: "{hung_kms}", token_env: MH_TEST_VAULT_TOKEN, timeout_s: 60}}',
    }[backend]
    kms = f"{{backend: {backend}, timeout_s: 1, attempts: 3, {section}}}"
    with anyio.fail_after(30):  # generous: the KMS would hang far longer than this
        async with running(CONFIG.format(tmp=tmp_path, kms=kms)) as app:
            admin = _client(app, ADMIN_KEY)
            refused = error(await admin.put("/admin/v1/provider-credentials/sealed", json={"api_key": SECRET}), 503)
            assert refused["code"] == "kms_unavailable" and refused["type"] == "server_error"
            assert hung_kms.split("//")[1] in refused["message"]
            assert (await ok(await admin.get("/admin/v1/provider-credentials/sealed")))["set"] is False
    trail = [json.loads(line) for p in (tmp_path / "audit").glob("*.jsonl") for line in p.read_text().splitlines()]
    (failed,) = [e["body"] for e in trail if e["kind"] == "kms"]
    # kms.timeout_s ended it (vault's own 60 s request timeout is capped to it), not a connection error.
    assert failed["outcome"] == "unavailable" and "no answer within 1 s" in failed["error"]


async def test_a_key_set_on_one_replica_reaches_the_others_by_their_poll(tmp_path, monkeypatch, sqlite_database):
    """docs/encryption.md "Provider credentials": the replica that took the change applies it before it
    answers; every other replica polls the table's versions every `storage.refresh_s` and swaps in the new
    key (a rotation and a delete too)."""
    import asyncio
    import time

    monkeypatch.setenv("MH_TEST_CRED_ADMIN", ADMIN_KEY)
    sqlite_database("mh.db")
    text = CONFIG.format(tmp=tmp_path, kms=f'{{local: {{key_file: "{tmp_path}/kms.key"}}}}')
    async with running(text) as one, running(text) as other:

        async def reaches_other(expected: str | None) -> None:
            deadline = time.monotonic() + 30  # generous: the poll runs every storage.refresh_s (0.25 s)
            while _sent_key(other) != expected:
                assert time.monotonic() < deadline, f"the other replica still sends {_sent_key(other)!r}"
                await asyncio.sleep(0.05)

        admin = _client(one, ADMIN_KEY)
        await ok(await admin.put("/admin/v1/provider-credentials/sealed", json={"api_key": SECRET}))
        assert _sent_key(one) == f"Bearer {SECRET}"  # this replica: before it answered
        await reaches_other(f"Bearer {SECRET}")
        await ok(await admin.put("/admin/v1/provider-credentials/sealed", json={"api_key": ROTATED}))
        await reaches_other(f"Bearer {ROTATED}")
        await ok(await admin.delete("/admin/v1/provider-credentials/sealed"))
        await reaches_other(None)
