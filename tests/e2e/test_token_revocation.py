"""Revoking OIDC tokens before their exp, end to end: two real `multihome serve` replicas sharing one
database (SQLite, then a real PostgreSQL), tokens minted by a real local issuer, the official openai
SDK as the client. A revocation made through one replica is enforced by the other within the
snapshot refresh interval; the `multihome token-revocations` CLI drives a running gateway."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from datetime import datetime
from pathlib import Path

import httpx
import openai
import pytest

from builders import audit, database_env, identity, oidc, simulated, single
from oidc_issuer import LocalIssuer  # tests/ is on sys.path (pytest rootdir insertion)

from .helpers import Staleness, stale_for
from .processes import VENV_BIN, Gateway, Simulator, started_together
from .stores import head_database

ADMIN_KEY = "mh-bootstrap-admin-key-for-revocation-tests"
USER = [{"role": "user", "content": "hello"}]
URL = "/admin/v1/token-revocations"
# storage.refresh_s is 0.25: a replica must answer the new way to every call sent this long after the
# change was committed, plus its own slowest answer meanwhile (helpers.Staleness: measured on the
# replica's side, not by when this test noticed).
BOUND_S = 2.0
MEASURED: dict[str, list[Staleness]] = {}  # how long each replica stayed stale, printed at the end (pytest -s)


def _config(issuer: LocalIssuer, sim: str, audit_dir: Path) -> dict:
    return single(
        simulated("openai", sim),
        model="main",
        names=("sim", "main", "gpt-4o"),
        group_fields={"retries": 0},
        storage=database_env(refresh_s=0.25),
        identity=identity(
            "MH_TEST_ADMIN_KEY", oidc(issuer, role_map={"ai-admins": "tenant-admin", "ai-auditors": "auditor"})
        ),
        audit=audit(audit_dir),
    )


class World:
    def __init__(self, gateways, sim, issuer, backend):
        self.gw, self.gw2 = gateways
        self.sim, self.issuer, self.backend = sim, issuer, backend
        self.admin = self.http(ADMIN_KEY)

    def http(self, credential: str, gw=None) -> httpx.Client:
        return httpx.Client(base_url=(gw or self.gw).url, headers={"authorization": f"Bearer {credential}"}, timeout=10)

    def ok(self, resp: httpx.Response, status: int = 200) -> dict:
        assert resp.status_code == status, resp.text
        return resp.json()

    def outcome(self, token: str, gw) -> str:
        """'ok' if the token calls a model through `gw`, else the 401's code (message checked)."""
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=token, max_retries=0, timeout=10)
        try:
            assert client.chat.completions.create(model="gpt-4o", messages=USER).choices
            return "ok"
        except openai.AuthenticationError as err:
            assert token not in err.message and token.split(".")[1][:20] not in err.message
            if err.code == "token_revoked":
                assert "revoked" in err.message
            return err.code

    def wait_for(self, token: str, gw, wanted: str, committed: float | None = None) -> Staleness:
        """Wait until `token` gets `wanted` from `gw` (polled back to back, a generous deadline); returns
        how long after `committed` (default: now) `gw` still answered otherwise (helpers.stale_for)."""
        since = time.monotonic() if committed is None else committed
        return stale_for(lambda: self.outcome(token, gw) == wanted, since, what=f"{gw.url} answering {wanted}")

    def revoke(self, client: httpx.Client | None = None, **body) -> dict:
        return self.ok((client or self.admin).post(URL, json={"issuer": "local", **body}), 201)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"revocation-{request.param}")
    db = head_database(request, request.param, tmp)  # migrated: the replicas start together
    sim = Simulator("openai", "revocation-sim")
    issuer = LocalIssuer().start()
    env = {"MH_TEST_DB": db, "MH_TEST_ADMIN_KEY": ADMIN_KEY}
    gateways = []
    try:
        for i in (1, 2):  # two replicas, one database; each writes its own audit trail
            gateways.append(Gateway(_config(issuer, sim.url, tmp / f"audit-{i}"), tmp, env, wait=False))
        started_together(*gateways)
        w = World(gateways, sim, issuer, request.param)
        w.a = w.ok(w.admin.post("/admin/v1/tenants", json={"name": "acme"}), 201)["id"]
        w.b = w.ok(w.admin.post("/admin/v1/tenants", json={"name": "globex"}), 201)["id"]
        yield w
    finally:
        logs = [g.stop() for g in gateways]
        sim.stop()
        issuer.stop()
    for log in logs:
        assert ADMIN_KEY not in log and "eyJ" not in log  # no admin key, no token in the logs
    for name, took in MEASURED.items():
        if name.startswith(request.param):
            print(
                f"\n{name}: stale for median {statistics.median(t.after_commit for t in took) * 1000:.0f} ms, "
                f"max {max(t.after_commit for t in took) * 1000:.0f} ms over {len(took)}; "
                f"slowest answer {max(t.slowest for t in took) * 1000:.0f} ms"
            )


def test_a_jti_revocation_made_on_one_replica_is_enforced_by_the_other_within_the_bound(world):
    took = []
    for i in range(6):
        leaked = world.issuer.mint(tenant=world.a, sub="alice", jti=f"leaked-{i}")
        kept = world.issuer.mint(tenant=world.a, sub="alice", jti=f"kept-{i}")
        assert world.outcome(leaked, world.gw) == world.outcome(leaked, world.gw2) == "ok"
        made = world.revoke(kind="jti", jti=f"leaked-{i}", reason="pasted into a public channel")
        committed = time.monotonic()
        assert world.outcome(leaked, world.gw) == "token_revoked"  # the replica that took the change: at once
        took.append(world.wait_for(leaked, world.gw2, "token_revoked", committed))
        # The same subject's other token still works, on both replicas.
        assert world.outcome(kept, world.gw) == world.outcome(kept, world.gw2) == "ok"
        assert made["tenant_id"] is None and made["issuer"] == world.issuer.issuer
    MEASURED.setdefault(f"{world.backend}: jti revocation, replica 1 -> replica 2", []).extend(took)
    assert all(t.within(BOUND_S) for t in took), f"replica 2 accepted a revoked token afterwards: {took}"


def test_a_subject_revocation_refuses_tokens_issued_up_to_the_cut_off_and_accepts_later_ones(world):
    now = int(time.time())
    before = [world.issuer.mint(tenant=world.a, sub="bob", jti=f"bob-{i}", iat=now - 60 * i) for i in range(1, 3)]
    carol = world.issuer.mint(tenant=world.a, sub="carol")
    assert all(world.outcome(t, world.gw2) == "ok" for t in before)
    made = world.revoke(kind="subject", subject="bob", reason="left the company")
    committed = time.monotonic()
    stale = []
    for token in before:
        stale.append(world.wait_for(token, world.gw2, "token_revoked", committed))
        assert world.outcome(token, world.gw) == "token_revoked"
    MEASURED.setdefault(f"{world.backend}: subject revocation, replica 1 -> replica 2", []).extend(stale)
    assert all(t.within(BOUND_S) for t in stale), f"replica 2 accepted a revoked subject's token afterwards: {stale}"
    assert world.outcome(carol, world.gw2) == "ok"
    # A token issued after the cut-off (iat is in whole seconds) is accepted on both replicas.
    cut = datetime.fromisoformat(made["not_before"]).timestamp()
    while time.time() < int(cut) + 1.05:
        time.sleep(0.05)
    after = world.issuer.mint(tenant=world.a, sub="bob", jti="bob-after")
    assert world.outcome(after, world.gw) == world.outcome(after, world.gw2) == "ok"


def test_deleting_a_revocation_restores_access_on_every_replica(world):
    token = world.issuer.mint(tenant=world.a, sub="erin", jti="erin-1")
    made = world.revoke(kind="jti", jti="erin-1")
    world.wait_for(token, world.gw2, "token_revoked")
    gone = world.ok(world.http(ADMIN_KEY, world.gw2).delete(f"{URL}/{made['id']}"))  # through the other replica
    committed = time.monotonic()
    assert gone == {"id": made["id"], "object": "token_revocation.deleted", "deleted": True, "tenant_id": None}
    assert world.outcome(token, world.gw2) == "ok"
    took = world.wait_for(token, world.gw, "ok", committed)
    MEASURED.setdefault(f"{world.backend}: deletion, replica 2 -> replica 1", []).append(took)
    assert took.within(BOUND_S), f"replica 1 refused a token no longer revoked afterwards: {took}"
    assert world.admin.get(f"{URL}/{made['id']}").status_code == 404


def test_tenant_admins_revoke_only_their_tenant_and_auditors_cannot_write(world):
    tadmin = world.http(world.issuer.mint(tenant=world.a, sub="sec-lead", roles=["ai-admins"]), world.gw)
    auditor = world.http(world.issuer.mint(tenant=world.a, sub="aud-1", roles=["ai-auditors"]), world.gw)
    dave_a = world.issuer.mint(tenant=world.a, sub="dave", iat=int(time.time()) - 5)
    dave_b = world.issuer.mint(tenant=world.b, sub="dave", iat=int(time.time()) - 5)

    made = world.revoke(tadmin, kind="subject", subject="dave")
    assert (made["tenant_id"], made["actor"]) == (world.a, "sec-lead")  # scoped to the tenant-admin's tenant
    world.wait_for(dave_a, world.gw2, "token_revoked")
    assert world.outcome(dave_b, world.gw2) == "ok"  # the same subject acting in tenant b is untouched
    denied = tadmin.post(URL, json={"kind": "subject", "issuer": "local", "subject": "dave", "tenant_id": world.b})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "other_tenant"

    for resp in (
        auditor.post(URL, json={"kind": "jti", "issuer": "local", "jti": "x"}),
        auditor.delete(f"{URL}/{made['id']}"),
    ):
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "insufficient_role", resp.text
    listed = world.ok(auditor.get(URL))["data"]
    assert made["id"] in {r["id"] for r in listed} and {r["tenant_id"] for r in listed} == {world.a}
    assert world.outcome(dave_a, world.gw2) == "token_revoked"  # the refused delete changed nothing

    # The changes are in the audit trail of the replica that took them, attributed to the tenant.
    trail = world.ok(world.admin.get("/admin/v1/audit/events", params={"kind": "admin_change", "tenant": world.a}))
    assert ("token_revocation.create", made["id"], "sec-lead") in {
        (e["body"]["action"], e["body"]["object_id"], e["body"]["actor"]) for e in trail["data"]
    }


def test_cli_creates_lists_and_deletes_against_a_running_gateway(world):
    token = world.issuer.mint(tenant=world.a, sub="frank", jti="cli-jti")
    common = ["--url", world.gw.url, "--key", ADMIN_KEY]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(VENV_BIN / "multihome"), "token-revocations", *args, *common],
            capture_output=True,
            text=True,
            timeout=60,
        )

    made = cli("create", "--issuer", "local", "--jti", "cli-jti", "--tenant", world.a, "--reason", "ticket 42")
    assert made.returncode == 0, made.stderr
    assert "revoked jti cli-jti of local" in made.stdout and f"tenant {world.a}" in made.stdout
    rev_id = made.stdout.split(": ")[1].split()[0]
    assert rev_id.startswith("rev_")
    world.wait_for(token, world.gw2, "token_revoked")

    listed = cli("list", "--tenant", world.a, "--kind", "jti")
    assert listed.returncode == 0 and rev_id in listed.stdout and "ticket 42" in listed.stdout
    as_json = json.loads(cli("list", "--json", "--issuer", "local").stdout)
    assert rev_id in {r["id"] for r in as_json["data"]}

    bad = cli("create", "--issuer", "nowhere", "--subject", "x")
    assert bad.returncode != 0 and "error 400" in bad.stderr and "issuer" in bad.stderr

    deleted = cli("delete", rev_id)
    assert deleted.returncode == 0 and '"deleted": true' in deleted.stdout
    world.wait_for(token, world.gw2, "ok")
    assert rev_id not in cli("list").stdout
