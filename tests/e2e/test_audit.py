"""Crash test: the real gateway with audit on, under concurrent load, killed with SIGKILL, restarted.

What a user relies on: every request id a client got a 200 for has a durable `call_started`
event; the trail a crash and a restart leave behind still verifies (a torn last line and an
unsigned tail are only warnings), against the head registry in the database and against an
exported copy of it; and cutting the newest chain back to an earlier checkpoint then fails.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from builders import api_keys, audit, simulated, single, sqlite, yaml_text
from multihome.audit import AuditReader, Filters
from multihome.audit.keys import public_pem
from multihome.config import Config

from .processes import Gateway, Simulator

CLIENT_KEY = "mh-audit-client-key"


def _config(sim: str, db: Path, audit_dir: Path) -> dict:
    return single(
        simulated("openai", sim),
        names=("sim", "main", "gpt-4o"),
        group_fields={"retries": 0},
        server=api_keys("MH_TEST_CLIENT_KEY"),
        storage=sqlite(db),
        audit=audit(
            audit_dir, signing_key_env="MH_TEST_AUDIT_KEY", checkpoint_every_events=100, checkpoint_every_s=0.5
        ),
    )


pytestmark = pytest.mark.skipif(
    "audit" not in Config.__struct_fields__,
    reason="WAITS FOR PLUMBING: config.audit is not mounted yet (see the audit report to the lead)",
)


async def _load(url: str, answered: list[str], stop_after_s: float) -> None:
    """Bounded concurrent load: 16 workers, until stop_after_s or the gateway dies."""
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
    deadline = time.monotonic() + stop_after_s
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=5) as c:

        async def worker():
            while time.monotonic() < deadline:
                try:
                    resp = await c.post("/v1/chat/completions", json=body)
                except httpx.HTTPError:
                    return  # the gateway is gone
                if resp.status_code == 200:
                    answered.append(resp.headers["x-request-id"])

        await asyncio.gather(*(worker() for _ in range(16)))


def _verify(audit_dir, pub, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "multihome.cli",
            "audit",
            "verify",
            "--dir",
            str(audit_dir),
            "--public-key",
            str(pub),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _cut_back(audit_dir, chain: str) -> int:
    """What someone with the directory can do: the chain and its checkpoint file back to an earlier
    (validly signed) checkpoint. -> the seq it was cut back to."""
    cps_path = audit_dir / f"{chain}.checkpoints.jsonl"
    cps = [line for line in cps_path.read_bytes().splitlines(keepends=True) if not json.loads(line)["final"]]
    assert len(cps) >= 2, "the restarted gateway wrote no periodic checkpoint to cut back to"
    keep = json.loads(cps[-2])["seq"]
    events = audit_dir / f"{chain}.jsonl"
    events.write_bytes(
        b"".join(line for line in events.read_bytes().splitlines(keepends=True) if json.loads(line)["seq"] <= keep)
    )
    cps_path.write_bytes(b"".join(cps[:-1]))
    return keep


def test_sigkill_mid_load_then_restart_keeps_the_trail_verifiable(tmp_path):
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pub = tmp_path / "audit.pub.pem"
    pub.write_bytes(public_pem(key))
    audit_dir = tmp_path / "audit"
    db = tmp_path / "multihome.db"
    sim = Simulator("openai", "sim")
    gw = None
    config = ""
    try:
        sim.fault(latency_ms=2)
        env = {"MH_TEST_CLIENT_KEY": CLIENT_KEY, "MH_TEST_AUDIT_KEY": base64.b64encode(seed).decode()}
        config = yaml_text(_config(sim.url, db, audit_dir))
        gw = Gateway(config, tmp_path, env)
        answered: list[str] = []

        async def scenario():
            load = asyncio.ensure_future(_load(gw.url, answered, stop_after_s=20))
            for _ in range(400):  # bounded: kill once enough answers are in (at most ~20 s)
                if len(answered) >= 300 or load.done():
                    break
                await asyncio.sleep(0.05)
            os.kill(gw.popen.pid, signal.SIGKILL)  # mid-load: requests are in flight right now
            await asyncio.wait_for(load, 30)

        asyncio.run(scenario())
        gw.popen.wait(10)
        assert gw.popen.returncode == -signal.SIGKILL
        assert len(answered) >= 50, "the gateway answered too little before the kill to test anything"
        crashed = sorted(p.name for p in audit_dir.glob("chn_*.jsonl") if not p.name.endswith(".checkpoints.jsonl"))

        # Restart on the same directory and database, serve a little, stop cleanly.
        gw = Gateway(config, tmp_path, env)
        after: list[str] = []
        asyncio.run(_load(gw.url, after, stop_after_s=1.5))
        assert after, "the restarted gateway answered nothing"
        gw.stop(sig_timeout=20)
        assert gw.popen.returncode in (0, -signal.SIGTERM)  # a clean shutdown (uvicorn re-raises the signal)
        answered += after
    finally:
        if gw is not None:
            gw.stop()
        sim.stop()

    config_file = tmp_path / "verify.yaml"
    config_file.write_text(config)
    verify = _verify(audit_dir, pub, "--config", str(config_file))  # the config names the registry's database
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "head registry entries" in verify.stdout
    for line in verify.stderr.splitlines():  # only the warnings a crash may leave are allowed
        assert any(k in line for k in ("torn_tail", "unsigned_tail")), line

    reader = AuditReader(str(audit_dir))
    started = {e["body"]["request_id"] for _, e in reader.iter_events(Filters(kind="call_started"))}
    missing = [rid for rid in answered if rid not in started]
    assert not missing, f"{len(missing)} answered requests have no call_started event, e.g. {missing[:3]}"
    calls = {e["body"]["request_id"]: e["body"] for _, e in reader.iter_events(Filters(kind="call"))}
    assert calls, "no call completion events were written"
    done = next(iter(calls.values()))
    assert done["deployment"] == "main" and done["status"] == 200 and done["tenant"]

    # A witness copy of the registry, then the newest chain cut back: both the database and the copy see it.
    witness = tmp_path / "witness.json"
    export = subprocess.run(
        [
            sys.executable,
            "-m",
            "multihome.cli",
            "audit",
            "heads",
            "export",
            "--config",
            str(config_file),
            "--out",
            str(witness),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert export.returncode == 0, export.stderr
    assert _verify(audit_dir, pub, "--heads", str(witness)).returncode == 0
    newest = sorted(
        p.name[: -len(".jsonl")]
        for p in audit_dir.glob("chn_*.jsonl")
        if not p.name.endswith(".checkpoints.jsonl") and p.name not in crashed
    )[-1]
    kept = _cut_back(audit_dir, newest)
    for extra in (("--config", str(config_file)), ("--heads", str(witness))):
        cut = _verify(audit_dir, pub, *extra)
        assert cut.returncode == 1, cut.stdout + cut.stderr
        assert f"FAIL {newest}.jsonl" in cut.stdout and "rolled_back" in cut.stdout
        assert f"found seq {kept}" in cut.stdout
    # Without the registry the same cut passes, and verify says it could not have seen it.
    blind = _verify(audit_dir, pub)
    assert blind.returncode == 0 and "rollback of the newest chain cannot be detected" in blind.stderr
