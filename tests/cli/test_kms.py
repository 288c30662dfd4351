"""`multihome kms init|status|rotate|rewrap|shred` on a SQLite database and the local KMS: the key
file (mode 0600, never overwritten), what status reports, records that stay readable across
rotate + rewrap, a shred that needs confirmation and then makes exactly one tenant unreadable,
and every KMS use on the audit trail. The gateway running beside it: tests/e2e/test_kms_wiring.py."""

from __future__ import annotations

import asyncio
import json
import stat

import pytest

from multihome.cli import main
from multihome.config import load_config
from multihome.crypto import DataKeyNotFound, open_keyring
from multihome.storage import migrate_sync, open_store

CONFIG = """
storage: {{url: "sqlite+aiosqlite:///{tmp}/mh.db"}}
audit: {{dir: "{tmp}/audit"}}
kms: {{local: {{key_file: "{tmp}/kms.key"}}, reserve_block: 8}}
providers: {{p: {{kind: openai, endpoint: "http://127.0.0.1:9/v1"}}}}
deployments: {{d: {{provider: p, model: m}}}}
model_groups: {{g: {{deployments: [d]}}}}
"""
TENANTS = ("ten_a", "ten_b")


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "mh.yaml"
    path.write_text(CONFIG.format(tmp=tmp_path))
    return str(path)


def _seal_some(cfg: str) -> dict[tuple[str, str], bytes]:
    """Seal one record per tenant and purpose the way a store does; what it sealed, by (tenant, record id)."""

    async def run():
        config = load_config(cfg)
        store = await open_store(config.storage.url, migrate=True)
        keyring = open_keyring(config.kms, store.engine)
        sealed = {}
        for tenant in TENANTS:
            for purpose in ("capture", "credentials"):
                rid = f"{purpose}-1"
                sealed[(tenant, rid)] = await keyring.seal(tenant, purpose, "t", rid, f"{tenant} {purpose}".encode())
        await keyring.close()
        await store.close()
        return sealed

    return asyncio.run(run())


def _open_all(cfg: str, sealed: dict[tuple[str, str], bytes]) -> dict[tuple[str, str], bytes | Exception]:
    """Open each record with a fresh keyring (a new process: nothing cached)."""

    async def run():
        config = load_config(cfg)
        store = await open_store(config.storage.url)
        keyring = open_keyring(config.kms, store.engine)
        out = {}
        for (tenant, rid), data in sealed.items():
            try:
                out[(tenant, rid)] = await keyring.open(tenant, rid.split("-")[0], "t", rid, data)
            except Exception as exc:
                out[(tenant, rid)] = exc
        await keyring.close()
        await store.close()
        return out

    return asyncio.run(run())


def _trail(tmp_path) -> list[dict]:
    return [
        json.loads(line) for p in sorted((tmp_path / "audit").glob("*.jsonl")) for line in p.read_text().splitlines()
    ]


def test_init_makes_a_private_key_file_and_never_overwrites_it(cfg, tmp_path, capsys):
    assert main(["kms", "init", "--config", cfg]) == 0
    key_file = tmp_path / "kms.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert str(key_file) in capsys.readouterr().out
    before = key_file.read_bytes()
    assert main(["kms", "init", "--config", cfg]) == 1
    assert "exists already" in capsys.readouterr().err and key_file.read_bytes() == before
    other = tmp_path / "elsewhere" / "k.key"
    assert main(["kms", "init", "--key-file", str(other)]) == 0 and other.exists()  # no config needed


def test_status_before_the_first_seal_needs_no_key_file_and_a_lost_one_is_exit_1(cfg, tmp_path, capsys):
    """A gateway that never sealed made no key file (docs/encryption.md): `kms status` says so and exits 0
    (it exited 1, "key file not found", on the quickstart's fresh gateway). Once data keys are stored, a
    key file that cannot be read is a problem: exit 1."""
    migrate_sync(load_config(cfg).storage.url)
    assert main(["kms", "status", "--config", cfg]) == 0
    out = capsys.readouterr().out
    assert "nothing has been sealed" in out and "key file not found" in out
    assert main(["kms", "status", "--config", cfg, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["data_keys"] == []
    assert not (tmp_path / "kms.key").exists()  # status made none
    assert main(["kms", "init", "--config", cfg]) == 0  # (a gateway's first seal makes it)
    _seal_some(cfg)
    assert main(["kms", "status", "--config", cfg]) == 0
    capsys.readouterr()
    (tmp_path / "kms.key").unlink()  # lost
    assert main(["kms", "status", "--config", cfg]) == 1
    said = capsys.readouterr()
    assert "key file not found" in said.out and "does not open" in said.err
    assert main(["kms", "status", "--config", cfg, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["keks_unreadable"]


def test_status_rotate_rewrap_keep_every_record_readable(cfg, tmp_path, capsys):
    main(["kms", "init", "--config", cfg])
    migrate_sync(load_config(cfg).storage.url)  # what `multihome db upgrade` (or a gateway's start) does
    assert main(["kms", "status", "--config", cfg]) == 0
    assert "nothing has been sealed" in capsys.readouterr().out
    sealed = _seal_some(cfg)

    assert main(["kms", "status", "--config", cfg, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["backend"] == "local" and status["max_messages_per_key"] == 2**30
    rows = {(r["tenant_id"], r["purpose"]): r for r in status["data_keys"]}
    assert set(rows) == {(t, p) for t in TENANTS for p in ("capture", "credentials")}
    assert all(r["state"] == "active" and r["keys"] == 1 and r["messages"] == 8 for r in rows.values())
    (keks,) = status["keks"].values()
    assert len(keks) == 2 and all(k == {"latest": "1", "versions": ["1"]} for k in keks.values())

    assert main(["kms", "rotate", "--config", cfg]) == 0
    assert capsys.readouterr().out.count("new version 2") == 2
    assert main(["kms", "rewrap", "--config", cfg, "--batch-size", "3"]) == 0
    out = capsys.readouterr()
    assert "re-wrapped 4 of 4" in out.out and "rewrap: 3/4" in out.err and "rewrap: 4/4" in out.err
    main(["kms", "status", "--config", cfg, "--json"])
    status = json.loads(capsys.readouterr().out)
    assert {r["kek_version"] for r in status["data_keys"]} == {"2"}
    assert {r["state"] for r in status["data_keys"]} == {"retired"}  # rotation retired them: new seals get new keys

    # The old version gone from the key file (what disabling it in a real KMS does): all still open.
    from multihome.crypto.backends.local import LocalKms

    local = LocalKms(tmp_path / "kms.key")
    for name in local.kek_versions():
        local.drop_version(name, "1")
    opened = _open_all(cfg, sealed)
    assert opened == {k: f"{k[0]} {k[1].split('-')[0]}".encode() for k in sealed}

    ops = [e["body"]["op"] for e in _trail(tmp_path) if e["kind"] == "kms"]
    assert ops.count("rotate") == 2 and ops.count("rewrap") == 4


def test_rewrap_exits_1_naming_each_key_the_kms_refused_and_rewraps_the_others(cfg, tmp_path, capsys):
    """docs/encryption.md: `kms rewrap` exits 1 if the KMS refused a key; the rest are re-wrapped."""
    from multihome.crypto.backends.local import LocalKms

    main(["kms", "init", "--config", cfg])
    sealed = _seal_some(cfg)
    assert main(["kms", "rotate", "--config", cfg]) == 0
    local = LocalKms(tmp_path / "kms.key")
    (lost, _), (kept, _) = sorted(local.kek_versions().items())  # one KEK per tenant: ten_a's, ten_b's
    local.drop_version(lost, "1")  # ten_a's data keys are wrapped under a version the KMS no longer has
    capsys.readouterr()
    assert main(["kms", "rewrap", "--config", cfg]) == 1
    out = capsys.readouterr()
    assert "re-wrapped 2 of 4" in out.out
    assert out.err.count("refused by the KMS") == 2
    main(["kms", "status", "--config", cfg, "--json"])
    versions = {(r["tenant_id"], r["kek_version"]) for r in json.loads(capsys.readouterr().out)["data_keys"]}
    assert versions == {("ten_a", "1"), ("ten_b", "2")}
    opened = _open_all(cfg, sealed)
    assert all(opened[(t, rid)] == f"{t} {rid.split('-')[0]}".encode() for t, rid in opened if t == "ten_b")


def test_shred_asks_then_makes_exactly_one_tenant_unreadable(cfg, tmp_path, capsys, monkeypatch):
    main(["kms", "init", "--config", cfg])
    sealed = _seal_some(cfg)
    # No terminal and no --yes: refused, nothing changed.
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["kms", "shred", "--config", cfg, "--tenant", "ten_a"]) == 1
    assert "--yes" in capsys.readouterr().err
    # A terminal, and the wrong answer: refused.
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "ten_b")
    assert main(["kms", "shred", "--config", cfg, "--tenant", "ten_a"]) == 1
    assert all(not isinstance(v, Exception) for v in _open_all(cfg, sealed).values())
    # The tenant's id typed back: shredded.
    monkeypatch.setattr("builtins.input", lambda prompt: "ten_a")
    assert main(["kms", "shred", "--config", cfg, "--tenant", "ten_a"]) == 0
    assert "2 data keys deleted" in capsys.readouterr().out
    opened = _open_all(cfg, sealed)
    for (tenant, rid), value in opened.items():
        if tenant == "ten_a":
            assert isinstance(value, DataKeyNotFound)
        else:
            assert value == f"{tenant} {rid.split('-')[0]}".encode()
    assert main(["kms", "shred", "--config", cfg, "--tenant", "ten_b", "--yes"]) == 0
    assert all(isinstance(v, DataKeyNotFound) for v in _open_all(cfg, sealed).values())
    events = [e["body"] for e in _trail(tmp_path) if e["kind"] == "kms"]
    # (one chain per command: files of the same second sort by pid, not by time)
    assert sorted(e["tenant"] for e in events if e["op"] == "shred") == ["ten_a", "ten_b"]
    assert sorted(e["tenant"] for e in events if e["op"] == "destroy_key") == ["ten_a", "ten_b"]


def test_an_old_schema_is_refused_not_migrated(cfg, tmp_path):
    import sqlite3

    sqlite3.connect(tmp_path / "mh.db").close()  # an empty database: no schema at all
    with pytest.raises(SystemExit) as done:
        main(["kms", "status", "--config", cfg])
    assert "multihome db upgrade" in str(done.value.code)
    with sqlite3.connect(tmp_path / "mh.db") as db:
        assert db.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


def test_commands_need_a_config(monkeypatch, capsys):
    monkeypatch.delenv("MULTIHOME_CONFIG", raising=False)
    with pytest.raises(SystemExit) as done:
        main(["kms", "status"])
    assert "--config" in str(done.value.code)
