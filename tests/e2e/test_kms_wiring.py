"""The keyring wired into the real gateway, on SQLite and on PostgreSQL: a provider's API key set
through the admin API (sealed) reaches the simulator on the next call; a tenant with content
capture has its prompts and answers kept sealed and read back by its auditor only; `multihome kms
shred` beside the running gateway makes them unreadable. Neither the database (the SQLite files,
a `pg_dump`), the gateway's log, the audit files nor any admin answer holds the key, and the
database holds no prompt or answer in clear."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time

import httpx
import openai
import pytest

from multihome.storage import open_store

from .processes import Gateway, Simulator

ADMIN_KEY = "mhsecret-kw-admin-key-5c2e91"
UPSTREAM_KEY = "mhsecret-kw-upstream-key-0b7d3a6f"
PROMPT = "kw-prompt-marker-4411 what is the capital of France"
SIM_ENV = {"MH_KW_UPSTREAM": UPSTREAM_KEY}

CONFIG = """
storage: {{url: "{url}", refresh_s: 0.25}}
audit: {{dir: "{tmp}/audit"}}
identity: {{admin_key_env: MH_KW_ADMIN}}
kms: {{local: {{key_file: "{tmp}/kms.key"}}, cache_ttl_s: 1, serve_stale_s: 0}}
capture: {{tenants: ["{tenant}"], flush_interval_s: 0.1}}
providers:
  oa: {{kind: openai, endpoint: "{sim}/v1", auth: {{api_key_from: store}}}}
deployments:
  d: {{provider: oa, model: gpt-4o-kw}}
model_groups:
  gpt-4o: {{deployments: [d], retries: 0}}
"""


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    """A database at the head revision (a copy of one migrated once)."""
    if request.param == "sqlite":
        url = request.getfixturevalue("sqlite_database")("mh.db")
        return {"url": url, "dump": lambda: _sqlite_bytes(tmp_path)}
    url = request.getfixturevalue("pg_database")()
    return {"url": url, "dump": lambda: _pg_dump(request.getfixturevalue("pg_server"), url)}


def _sqlite_bytes(tmp_path) -> bytes:
    files = list(tmp_path.glob("mh.db*"))
    assert files
    return b"".join(p.read_bytes() for p in files)


def _pg_dump(pg, url: str) -> bytes:
    done = subprocess.run(
        [
            *pg._as_user,
            str(pg.bindir / "pg_dump"),
            "-h",
            pg.host,
            "-p",
            str(pg.port),
            "-U",
            pg.user,
            "-d",
            url.rsplit("/", 1)[1],
        ],
        capture_output=True,
        timeout=60,
        cwd=pg.dir,
        check=True,
    )
    return done.stdout


async def _new_tenant(url: str) -> str:
    store = await open_store(url, migrate=True)
    try:
        return (await store.create_tenant("acme", actor="test")).id
    finally:
        await store.close()


def _poll(check, what: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_sealed_credentials_and_capture_end_to_end(db, tmp_path):
    tenant = asyncio.run(_new_tenant(db["url"]))
    sim = Simulator("openai", "kw-openai", "--api-key-env", "MH_KW_UPSTREAM", env=SIM_ENV)
    config = CONFIG.format(url=db["url"], tmp=tmp_path, tenant=tenant, sim=sim.url)
    gw = Gateway(config, tmp_path, {"MH_KW_ADMIN": ADMIN_KEY})  # the upstream key is not in its environment
    answers: list[str] = []
    try:
        admin = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=20)

        def call(method: str, path: str, key: str | None = None, **kw) -> httpx.Response:
            headers = {"authorization": f"Bearer {key}"} if key else {}
            r = admin.request(method, path, headers=headers, **kw)
            answers.append(r.text)
            return r

        keys = {
            role: call("POST", f"/admin/v1/tenants/{tenant}/keys", json={"name": role, "roles": [role]}).json()["key"]
            for role in ("member", "auditor", "tenant-admin")
        }
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=keys["member"], max_retries=0, timeout=20)
        messages = [{"role": "user", "content": PROMPT}]

        # No key stored yet: the upstream refuses the gateway's (absent) credential.
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model="gpt-4o", messages=messages)
        assert refused.value.status_code == 502

        view = call("PUT", "/admin/v1/provider-credentials/oa", json={"api_key": UPSTREAM_KEY}).json()
        assert view["set"] and view["fingerprint"] == UPSTREAM_KEY[-4:]
        unary = client.chat.completions.create(model="gpt-4o", messages=messages).choices[0].message.content
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="gpt-4o", messages=messages, stream=True)
            if c.choices
        )
        assert unary and streamed

        # A rotation to a key the upstream does not know takes effect on the next call, then back.
        call("PUT", "/admin/v1/provider-credentials/oa", json={"api_key": UPSTREAM_KEY[::-1]})
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="gpt-4o", messages=messages)
        cli = [sys.executable, "-m", "multihome.cli"]
        out = subprocess.run(  # the admin CLI reads the key from stdin, never from its command line
            [*cli, "provider-credentials", "set", "oa", "--url", gw.url, "--key", ADMIN_KEY],
            input=UPSTREAM_KEY + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0 and "version 3" in out.stdout and UPSTREAM_KEY not in out.stdout + out.stderr
        assert client.chat.completions.create(model="gpt-4o", messages=messages).choices
        listed = subprocess.run(
            [*cli, "provider-credentials", "list", "--url", gw.url, "--key", ADMIN_KEY], capture_output=True, text=True
        ).stdout
        assert "oa" in listed and f"…{UPSTREAM_KEY[-4:]}" in listed and UPSTREAM_KEY not in listed
        assert [r["outcome"] for r in sim.requests()][-4:] == ["ok", "ok", "error:401", "ok"]

        # The tenant's auditor reads what was captured; nobody else does.
        def captured():
            r = call("GET", f"/admin/v1/tenants/{tenant}/captures", keys["auditor"], params={"limit": 100})
            assert r.status_code == 200, r.text
            data = r.json()["data"]
            return data if len([c for c in data if c["status"] == 200]) >= 3 else None

        captures = _poll(captured, "three captured calls")
        ok_calls = [c for c in captures if c["status"] == 200]
        assert all(PROMPT in c["prompt"] for c in captures)
        assert unary in ok_calls[0]["answer"] and "data: " in ok_calls[1]["answer"]  # a body, then the SSE stream
        for who in (None, keys["tenant-admin"], keys["member"]):
            assert call("GET", f"/admin/v1/tenants/{tenant}/captures", who).status_code == 403

        # Rotate and re-wrap beside the running gateway (no downtime): everything still opens, calls go on.
        cfg = next(tmp_path.glob("gateway-*.yaml"))
        for command in (["kms", "rotate"], ["kms", "rewrap"]):
            out = subprocess.run([*cli, *command, "--config", str(cfg)], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
        assert "re-wrapped 2 of 2" in out.stdout  # the organisation's credentials key and the tenant's capture key
        assert client.chat.completions.create(model="gpt-4o", messages=messages).choices
        time.sleep(1.2)  # past kms.cache_ttl_s: what follows unwraps the re-wrapped keys again
        assert all("prompt" in c for c in captured())
        assert client.chat.completions.create(model="gpt-4o", messages=messages).choices

        # Shred the tenant beside the running gateway: within kms.cache_ttl_s its captures no longer open.
        out = subprocess.run(
            [*cli, "kms", "shred", "--tenant", tenant, "--yes", "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr

        def unreadable():
            r = call("GET", f"/admin/v1/tenants/{tenant}/captures", keys["auditor"], params={"limit": 100})
            data = r.json()["data"]
            return data if data and all(c.get("unreadable") and "prompt" not in c for c in data) else None

        _poll(unreadable, "the shredded tenant's captures to stop opening")
        # The provider credential is the organisation's, not the tenant's: still in use.
        assert client.chat.completions.create(model="gpt-4o", messages=messages).choices

        trail = "".join(p.read_text() for p in (tmp_path / "audit").glob("*.jsonl"))
        kms_ops = {json.loads(line)["body"]["op"] for line in trail.splitlines() if '"kind":"kms"' in line}
        assert {"generate", "unwrap", "rotate", "rewrap", "shred", "destroy_key"} <= kms_ops
        assert '"action":"capture.read"' in trail and '"action":"provider_credential.set"' in trail
    finally:
        log = gw.stop()
        sim.stop()

    dump = db["dump"]()
    assert b"captures" in dump and b"provider_credentials" in dump
    for text in ("kw-prompt-marker-4411", unary, UPSTREAM_KEY, UPSTREAM_KEY[::-1]):
        assert text.encode() not in dump, f"the database holds {text!r} in clear"
    assert UPSTREAM_KEY not in log and UPSTREAM_KEY not in trail
    assert PROMPT not in trail and PROMPT not in log
    shown = [a for a in answers if UPSTREAM_KEY in a or UPSTREAM_KEY[::-1] in a]
    assert not shown, shown

    # The key material itself: the local KMS's KEKs and every data key still stored, unwrapped.
    keys = asyncio.run(_key_material(db["url"], tmp_path / "kms.key"))
    assert len(keys) >= 2
    for key in keys:
        assert key not in dump
        for text in (key.hex(), base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode().rstrip("=")):
            assert text.encode() not in dump and text not in log and text not in trail
            assert not [a for a in answers if text in a]


async def _key_material(url: str, key_file) -> list[bytes]:
    import sqlalchemy as sa

    from multihome.crypto.backends.local import LocalKms
    from multihome.crypto.keyring import kms_context
    from multihome.storage.tables import data_keys as t

    keks = [
        base64.b64decode(v) for k in json.loads(key_file.read_text())["keys"].values() for v in k["versions"].values()
    ]
    store = await open_store(url)
    try:
        async with store.engine.connect() as conn:
            rows = (await conn.execute(sa.select(t))).all()
    finally:
        await store.close()
    kms = LocalKms(key_file)
    return keks + [
        await kms.decrypt(r.kek_id, r.kek_version, bytes(r.wrapped), kms_context(r.tenant_id, r.purpose, r.id))
        for r in rows
    ]
