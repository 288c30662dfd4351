"""The audit directory's disk full, against the real `multihome` process (a 2 MiB tmpfs filled up), with the
official openai SDK as client. docs/audit.md promises that nothing is answered or changed unaudited: while
the trail cannot be written, calls and admin changes are refused with a 503 `audit_unavailable` in OpenAI's
error format (never a 500), an admin change and a memory bulk delete are refused before they are made,
reads are served, and once the disk has room again the gateway writes a new chain and serves, without a
restart; the trail verifies and holds no empty chain files."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from pathlib import Path

import httpx
import openai
import pytest

from builders import audit, config, deployment, groups, identity, price, simulated, sqlite

from .helpers import finished, tenant_with_key, until
from .processes import VENV_BIN, Gateway, Simulator

ADMIN_KEY = "mh-audit-full-admin"
CLIENT_KEY = "mh-audit-full-client"
ENV = {"MH_AF_ADMIN": ADMIN_KEY, "MH_AF_CLIENT": CLIENT_KEY}
USER = [{"role": "user", "content": "audit me"}]


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (mounting needs root; the suite's PostgreSQL runs so too), unmounted however the test ends."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def _fill(disk: Path) -> Path:
    """A file taking every free block of `disk` (bounded: the disk is 2 MiB)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        for _ in range(64):
            f.write(b"\0" * 65536)
        raise AssertionError("the disk never filled")
    return filler


def _verifies(trail: Path) -> None:
    verified = subprocess.run(
        [str(VENV_BIN / "multihome"), "audit", "verify", "--dir", str(trail)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def _chat(client: openai.OpenAI) -> int | str:
    """200, or the refusal's code."""
    try:
        client.chat.completions.create(model="quick", messages=USER)
        return 200
    except openai.APIStatusError as exc:
        assert exc.status_code == 503, (exc.status_code, exc.body)
        assert exc.response.headers.get("retry-after"), exc.response.headers
        return exc.code or ""


def test_a_full_audit_disk_refuses_with_503_changes_nothing_and_serves_again_once_it_has_room(small_disk, tmp_path):
    sim = Simulator("openai", "sim")
    gateway = None
    trail = small_disk / "audit"
    try:
        cfg = config(
            server={"api_keys_env": ["MH_AF_CLIENT"]},
            storage=sqlite(tmp_path / "multihome.db"),
            identity=identity("MH_AF_ADMIN"),
            audit=audit(trail),
            providers={"oa": simulated("openai", sim.url)},
            deployments={"quick": deployment("oa", "m-quick")},
            model_groups=groups({"quick": "quick"}, retries=0),
        )
        gateway = Gateway(cfg, tmp_path, ENV)
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)
        admin = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
        assert _chat(client) == 200
        _, owner_key = tenant_with_key(admin, "acme", roles=("tenant-admin",))
        owner = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {owner_key}"}, timeout=30)
        kept = owner.post("/v1/memory/records", json={"agent_id": "a", "user_id": "u", "text": "my dog is Rex"})
        assert kept.status_code == 200, kept.text

        filler = _fill(small_disk)
        # The chain file's last page may still take a line or two: then the next call meets the full disk.
        seen = [_chat(client) for _ in range(3)]
        assert "audit_unavailable" in seen, seen
        assert [_chat(client) for _ in range(3)] == ["audit_unavailable"] * 3
        refused = admin.post("/admin/v1/tenants", json={"name": "made-while-full"})
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "audit_unavailable" and refused.headers.get("retry-after")
        listed = admin.get("/admin/v1/tenants")
        assert listed.status_code == 200, listed.text  # reads are served
        assert "made-while-full" not in [t["name"] for t in listed.json()["data"]], "refused, yet made"
        forgotten = owner.delete("/v1/memory/users/u")  # a bulk delete: its `memory` event first
        assert forgotten.status_code == 503 and forgotten.json()["error"]["code"] == "audit_unavailable", forgotten.text
        assert owner.get(f"/v1/memory/records/{kept.json()['id']}").status_code == 200, "refused, yet deleted"

        filler.unlink()
        # The first change after waits for the chain the writer opens for it (no call came first to open one).
        made = admin.post("/admin/v1/tenants", json={"name": "made-after"})
        assert made.status_code == 201, made.text
        assert _chat(client) == 200
    finally:
        log = gateway.stop() if gateway is not None else ""
        sim.stop()
    assert "Traceback" not in log and " 500 " not in log, log[-4000:]
    assert all(p.stat().st_size > 0 for p in trail.iterdir()), sorted(
        (p.name, p.stat().st_size) for p in trail.iterdir()
    )
    _verifies(trail)


def test_a_background_response_whose_attempts_run_out_on_a_full_audit_disk_ends_failed_and_unbilled(
    small_disk, tmp_path
):
    """docs/responses.md "Exactly once after a crash" and docs/agents.md: a run that cannot write its audit
    events raises and its job is tried again; once its attempts are used up the response is `failed`
    (`server_error`), a poll shows it, and none of the upstream answers it could not serve is billed. Once
    the disk has room the gateway serves background responses again, and the trail verifies."""
    sim = Simulator("openai", "sim")
    gateway = None
    trail = small_disk / "audit"
    try:
        cfg = config(
            storage=sqlite(tmp_path / "multihome.db"),
            identity=identity("MH_AF_ADMIN"),
            audit=audit(trail),
            responses={"background": {"lease_s": 2.0, "poll_s": 0.1, "event_flush_ms": 50, "max_attempts": 2}},
            providers={"oa": simulated("openai", sim.url)},
            deployments={"quick": deployment("oa", "m-quick", price=price(1_000_000, 1_000_000))},  # $1 a token
            model_groups=groups({"quick": "quick"}, retries=0),
        )
        gateway = Gateway(cfg, tmp_path, ENV)
        admin = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
        tenant, key = tenant_with_key(admin, "acme")
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=30)
        kept = client.responses.create(model="quick", input="kept before")

        filler = _fill(small_disk)
        # The chain file's last page may still take a line or two: foreground calls use it up first.
        until(lambda: _responses_refused(client), timeout=30, what="a call refused for the full disk")
        queued = client.responses.create(model="quick", input="run while full", background=True)
        assert queued.status == "queued"
        ended = finished(client, queued.id, timeout=90)
        assert ended.status == "failed" and ended.error is not None and ended.error.code == "server_error", ended
        assert ended.output == []
        # Each of its two attempts got an answer it could not serve unaudited (under the one request id).
        [unserved] = {r["request_id"] for r in sim.requests() if "run while full" in r["body"]}
        assert len([r for r in sim.requests() if "run while full" in r["body"]]) == 2

        filler.unlink()
        later = client.responses.create(model="quick", input="run with room", background=True)
        done = finished(client, later.id, timeout=90)
        assert done.status == "completed" and "run with room" in done.output_text, done
        assert client.responses.retrieve(kept.id).output_text == kept.output_text
        assert client.responses.retrieve(queued.id).status == "failed"
    finally:
        log = gateway.stop() if gateway is not None else ""
        sim.stop()
    with sqlite3.connect(tmp_path / "multihome.db") as db:  # the gateway stopped: every usage row written
        rows = db.execute("SELECT request_id, outcome FROM usage_calls").fetchall()
    assert [r for r in rows if r[0].startswith(unserved)] == [], rows  # none of its answers billed
    assert len([r for r in rows if r[1] == "ok"]) == 2, rows  # kept before, run with room
    assert "Traceback" not in log and " 500 " not in log, log[-4000:]
    _verifies(trail)


def _responses_refused(client: openai.OpenAI) -> bool:
    try:
        client.responses.create(model="quick", input="foreground while full", store=False)
    except openai.APIStatusError as exc:
        assert exc.status_code == 503 and exc.code == "audit_unavailable", exc.body
        return True
    return False
