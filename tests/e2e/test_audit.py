"""Crash test: the real gateway with audit on, under concurrent load, killed with SIGKILL.

What a user relies on: every request id a client got a 200 for has a durable `call_started`
event, and the trail a crash leaves behind still verifies (a torn last line is only a warning).

Needs the lead's plumbing: `audit:` mounted in config (config.audit, an AuditConfig) and the front
door awaiting `AuditLog.call_started` before the first byte and calling `AuditLog.record` after.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

from multihome.audit import AuditReader, Filters
from multihome.audit.keys import public_pem
from multihome.config import Config

from .processes import Gateway, Simulator

CLIENT_KEY = "mh-audit-client-key"
CONFIG = """
server: {{api_keys_env: [MH_TEST_CLIENT_KEY]}}
audit: {{dir: "{audit}", signing_key_env: MH_TEST_AUDIT_KEY, checkpoint_every_events: 100, checkpoint_every_s: 0.5}}
providers:
  sim: {{kind: openai, endpoint: "{sim}/v1"}}
deployments:
  main: {{provider: sim, model: m}}
model_groups:
  gpt-4o: {{deployments: [main], retries: 0}}
"""

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


def test_sigkill_mid_load_keeps_every_answered_call_started(tmp_path):
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pub = tmp_path / "audit.pub.pem"
    pub.write_bytes(public_pem(key))
    audit_dir = tmp_path / "audit"
    sim = Simulator("openai", "sim")
    gw = None
    try:
        sim.fault(latency_ms=2)
        env = {"MH_TEST_CLIENT_KEY": CLIENT_KEY, "MH_TEST_AUDIT_KEY": base64.b64encode(seed).decode()}
        gw = Gateway(CONFIG.format(audit=audit_dir, sim=sim.url), tmp_path, env)
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
    finally:
        if gw is not None:
            gw.stop()
        sim.stop()

    verify = subprocess.run(
        [sys.executable, "-m", "multihome.cli_audit", "audit", "verify", "--dir", str(audit_dir), "--public-key", str(pub)],
        capture_output=True, text=True, timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
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
