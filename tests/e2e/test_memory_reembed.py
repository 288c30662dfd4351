"""Moving a memory namespace to a new embedding model, end to end (docs/memory.md "Moving a namespace to
another embedding model"): the real gateway (SQLite, then PostgreSQL; local KMS; audit trail) in front of
an OpenAI simulator, the official openai SDK as the client, and the `multihome memory reembed` CLI.

A namespace written with `text-embedding-3-small` is refused (409) once the config's embedding group
serves `text-embedding-3-large` only. Another tenant's admin cannot move it (404), a member key may not
(403). The CLI moves it batch by batch through the admin API; the gateway is killed with SIGKILL in the
middle, and the CLI run again against the restarted gateway finishes the move: every record was embedded
by the new model, none more than once apart from the batch in flight at the kill; the moved namespace
answers searches by the new model; the embeddings are the tenant's usage rows and every batch an
`admin_change` event; the other tenant's namespace was not touched."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa

from builders import audit, breakers, config, database, embedding, group, identity, simulated
from multihome.crypto import init_key_file
from multihome.storage.engine import create_engine

from .helpers import tenant_with_key, until
from .processes import VENV_BIN, Gateway, Simulator
from .test_memory import post

ADMIN_KEY = "mh-memory-reembed-admin"
SECRETS = {"MH_RE_ADMIN_KEY": ADMIN_KEY}
OLD, NEW = "text-embedding-3-small", "text-embedding-3-large"
NS = {"agent_id": "concierge", "user_id": "u-1"}
FACTS = [f"Fact {i}: the guest in room {100 + i} asked for extra pillows number {i}." for i in range(40)]
FACTS[17] = "The guest's dog is a beagle called Biscuit."
BATCH = 5


def _config(tmp: Path, db: str, sim: Simulator, model: str) -> dict[str, Any]:
    return config(
        storage=database(db),
        kms={"local": {"key_file": str(tmp / "kms.key")}},
        identity=identity("MH_RE_ADMIN_KEY"),
        audit=audit(tmp / "audit"),
        routing=breakers(0),
        providers={"x": simulated("openai", sim.url)},
        deployments={"emb": embedding("x", model)},
        model_groups={"embed": group("emb", retries=0)},
        memory={"embeddings": {"model": "embed"}},
    )


def _sql(db: str, query: str, **params: Any) -> list[Any]:
    async def run() -> list[Any]:
        engine = create_engine(db)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(sa.text(query), params)).all())
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _staged(db: str) -> int:
    return _sql(db, "SELECT count(*) FROM memory_records WHERE next_body IS NOT NULL")[0][0]


def _embedded(sim: Simulator, model: str) -> list[str]:
    """Every text the simulator was asked to embed by `model`, in order."""
    out: list[str] = []
    for r in sim.requests():
        if r["path"].endswith("/embeddings"):
            body = json.loads(r["body"])
            if body["model"] == model:
                out += body["input"] if isinstance(body["input"], list) else [body["input"]]
    return out


def _cli(gateway: Gateway, key: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "MULTIHOME_URL": gateway.url, "MULTIHOME_ADMIN_KEY": key}
    return subprocess.Popen(
        [str(VENV_BIN / "multihome"), "memory", "reembed", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _sdk(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=30)


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_namespace_moves_to_the_new_model_through_a_kill(store, request, tmp_path):
    db = request.getfixturevalue("sqlite_database" if store == "sqlite" else "pg_database")()  # at head already
    init_key_file(tmp_path / "kms.key")
    sim = Simulator("openai", "reembed-x")
    gateways: list[Gateway] = []
    try:
        # Written with the old model.
        gateways.append(Gateway(_config(tmp_path, db, sim, OLD), tmp_path, SECRETS))
        gw = gateways[-1]
        admin = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
        acme, member = tenant_with_key(admin, "acme")
        resp = admin.post(f"/admin/v1/tenants/{acme}/keys", json={"name": "ops", "roles": ["tenant-admin"]})
        acme_admin = resp.json()["key"]
        globex, globex_member = tenant_with_key(admin, "globex")
        resp = admin.post(f"/admin/v1/tenants/{globex}/keys", json={"name": "ops", "roles": ["tenant-admin"]})
        globex_admin = resp.json()["key"]
        admin.close()
        post(_sdk(gw, member), "/memory/records", {**NS, "records": [{"text": t} for t in FACTS]})
        post(_sdk(gw, globex_member), "/memory/records", {**NS, "text": "Globex's own record."})
        gw.stop()

        # The config now embeds with the new model only: the namespace is refused until it is moved.
        gateways.append(Gateway(_config(tmp_path, db, sim, NEW), tmp_path, SECRETS))
        gw = gateways[-1]
        with pytest.raises(openai.ConflictError) as refused:
            post(_sdk(gw, member), "/memory/search", {**NS, "query": "what is the dog called?"})
        assert refused.value.code == "memory_embedding_model_unavailable"
        assert "multihome memory reembed" in refused.value.message  # the way out, named
        path = "/admin/v1/tenants/{}/memory/namespaces/reembed"
        other = httpx.post(
            gw.url + path.format(acme), json=NS, headers={"authorization": f"Bearer {globex_admin}"}, timeout=30
        )
        assert other.status_code == 404, other.text  # another tenant's namespace: not found, not forbidden
        assert other.json()["error"]["code"] == "not_found"
        member_try = httpx.post(
            gw.url + path.format(acme), json=NS, headers={"authorization": f"Bearer {member}"}, timeout=30
        )
        assert member_try.status_code == 403, member_try.text
        nobody = httpx.post(
            gw.url + path.format(acme),
            json={"agent_id": "nobody"},
            headers={"authorization": f"Bearer {acme_admin}"},
            timeout=30,
        )
        assert nobody.status_code == 404, nobody.text
        assert _embedded(sim, NEW) == []  # none of these embedded anything
        assert _staged(db) == 0

        # The CLI moves it batch by batch; the gateway is killed in the middle.
        sim.fault(latency_ms=300)  # each batch's embedding takes a while: the kill finds one in flight
        cli = _cli(gw, acme_admin, "concierge/u-1", "--batch-size", str(BATCH))
        until(lambda: _staged(db) >= 2 * BATCH, timeout=120, what="two batches moved")
        os.kill(gw.popen.pid, signal.SIGKILL)
        gw.popen.wait(30)
        out, _ = cli.communicate(timeout=60)
        assert cli.returncode != 0, out  # cut off: it says so and stops
        assert "running:" in out and "cannot reach the gateway" in out, out
        # Each answered call printed a line and has its event on disk (audited before the answer); the batch
        # in flight at the kill may have been committed unanswered: staged, not audited.
        answered_before = sum(line.startswith("running:") for line in out.splitlines())
        moved_before = _staged(db)
        assert 2 * BATCH <= moved_before < len(FACTS)
        ns_row = _sql(db, "SELECT embedding_model, reembed_model FROM memory_namespaces WHERE tenant_id = :t", t=acme)
        assert ns_row == [(OLD, NEW)]  # not switched: searches still had the old vectors
        sim.clear_faults()

        # Run again against the restarted gateway: it goes on from what was moved, and switches.
        gateways.append(Gateway(_config(tmp_path, db, sim, NEW), tmp_path, SECRETS))
        gw = gateways[-1]
        cli = _cli(gw, acme_admin, "concierge/u-1", "--batch-size", str(BATCH))
        out, _ = cli.communicate(timeout=300)
        assert cli.returncode == 0, out
        lines = out.strip().splitlines()
        assert lines[-1].startswith(f"completed: {len(FACTS)}/{len(FACTS)} records re-embedded by {NEW}"), out
        assert lines[0].startswith(f"running: {moved_before + BATCH}/{len(FACTS)}"), out  # resumed, not restarted

        # Every record embedded by the new model; none twice but the batch in flight at the kill.
        counts = Counter(_embedded(sim, NEW))
        assert set(counts) == set(FACTS)
        assert sum(counts.values()) - len(FACTS) <= BATCH, counts
        assert _staged(db) == 0
        assert _sql(
            db, "SELECT embedding_model, reembed_model FROM memory_namespaces WHERE tenant_id = :t", t=acme
        ) == [(NEW, None)]
        assert _sql(db, "SELECT embedding_model FROM memory_namespaces WHERE tenant_id = :t", t=globex) == [(OLD,)]

        # The namespace answers by the new model.
        hits = post(_sdk(gw, member), "/memory/search", {**NS, "query": "which beagle is called Biscuit?"})
        assert hits["data"][0]["text"] == FACTS[17]
        spaces = _sdk(gw, member).get("/memory/namespaces", cast_to=object)["data"]
        assert [(n["agent_id"], n["embedding_model"]) for n in spaces] == [("concierge", NEW)]
        assert _embedded(sim, NEW)[-1] == "which beagle is called Biscuit?"

        # Billed to the tenant as memory embeddings, and audited.
        rows = _sql(
            db,
            "SELECT endpoint, model_group FROM usage_calls WHERE tenant_id = :t AND request_id LIKE 'mreembed%'",
            t=acme,
        )
        assert len(rows) >= len(FACTS) // BATCH and set(rows) == {("memory_embeddings", "embed")}
        answered = answered_before + len(lines)
        until(lambda: len(_changes(tmp_path / "audit", acme)) >= answered, what="the audit events")
    finally:
        for gateway in gateways:
            log = gateway.stop()
            assert "Traceback" not in log, log[-3000:]
        sim.stop()


def _changes(audit_dir: Path, tenant: str) -> list[dict]:
    """The `memory.reembed` admin_change events of `tenant` on the audit trail."""
    events = [
        json.loads(line)
        for path in audit_dir.glob("chn_*.jsonl")
        if not path.name.endswith(".checkpoints.jsonl")
        for line in path.read_text().splitlines()
    ]
    return [
        e["body"]
        for e in events
        if e["kind"] == "admin_change" and e["body"]["action"] == "memory.reembed" and e["body"]["tenant"] == tenant
    ]
