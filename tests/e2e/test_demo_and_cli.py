"""`multihome demo` as a newcomer runs it, and `multihome serve --workers`."""

from __future__ import annotations

import subprocess
import time

import httpx
import openai

from .conftest import SECRETS, shared_config
from .helpers import until
from .processes import VENV_BIN, Gateway, free_port


def test_demo_shows_failover_and_serves_the_sdk():
    port = free_port()
    proc = subprocess.Popen(
        [str(VENV_BIN / "multihome"), "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("Demo ready") or proc.poll() is not None:
                break
        out = "".join(lines)
        assert f"export OPENAI_BASE_URL=http://127.0.0.1:{port}/v1" in out
        assert "export OPENAI_API_KEY=mh-demo-key" in out
        # The product beside the failover: the console's URL and an admin key to log in with.
        assert f"See it in the console: http://127.0.0.1:{port}/console" in out
        assert "export MULTIHOME_ADMIN_KEY=mh-demo-admin-" in out
        assert "Sample organisation: tenants 'Acme Retail' (ten_" in out and "(2 denied by policy)" in out
        healthy, down, throttled, recovered = [l for l in lines if l.strip()[:2] in ("1.", "2.", "3.", "4.")]
        assert "served by gpt-4o@azure-eastus" in healthy
        assert "served by gpt-4o@openai" in down
        assert "served by gpt-4o@azure-eastus" in throttled and "served by gpt-4o@azure-eastus" in recovered
        assert "http_503" in out and "http_429" in out

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="mh-demo-key", max_retries=0)
        assert {m.id for m in client.models.list()} == {
            "gpt-4o",
            "gpt-4o-mini",
            "llama-3.1-8b",
            "text-embedding-3-small",
        }
        raw = client.chat.completions.with_raw_response.create(
            model="llama-3.1-8b", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.parse().choices
        assert "server" not in raw.headers  # as `multihome serve` answers (cli/serve.py)
        # Metrics are on in the demo: the failover tour's calls are counted by deployment.
        assert f"Prometheus metrics:     http://127.0.0.1:{port}/metrics" in out
        metrics = until(
            lambda: (
                (text := httpx.get(f"http://127.0.0.1:{port}/metrics").text)
                and 'deployment="gpt-4o@openai"' in text
                and text
            ),
            what="the demo's calls in /metrics",
        )
        assert "multihome_requests_total{" in metrics
    finally:
        proc.terminate()
        proc.wait(10)


def test_demo_once_exits_cleanly_within_a_minute():
    started = time.monotonic()
    out = subprocess.run(
        [str(VENV_BIN / "multihome"), "demo", "--once", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "Exiting (--once)" in out.stdout
    assert time.monotonic() - started < 60


def test_serve_with_two_workers(sims, tmp_path):
    gw = Gateway(shared_config(sims), tmp_path, SECRETS, "--workers", "2")
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=SECRETS["MH_TEST_CLIENT_KEY"], max_retries=0)
        for _ in range(6):
            assert client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}]).choices
        assert sims["azure"].stats()["requests"] == 6
    finally:
        gw.stop()
