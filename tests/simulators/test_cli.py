"""The CLI: READY line, serving, clean exit on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import openai

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")


def test_cli_ready_serve_and_sigterm():
    env = {**os.environ, "SIM_KEY": "sk-cli", "PYTHONPATH": os.path.abspath(SRC)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "multihome.simulators",
            "--kind",
            "azure",
            "--port",
            "0",
            "--name",
            "cli-sim",
            "--api-key-env",
            "SIM_KEY",
            "--region",
            "swedencentral",
            "--deployment",
            "chat=gpt-4o-2024-08-06",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:"), line
        url = line.split()[1]
        client = openai.AzureOpenAI(azure_endpoint=url, api_version="2024-10-21", api_key="sk-cli", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "x"}]
        )
        assert raw.headers["x-ms-region"] == "swedencentral"
        assert raw.parse().model == "gpt-4o-2024-08-06"
        assert httpx.get(url + "/_sim/health").json()["name"] == "cli-sim"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_missing_env_var_fails():
    env = {k: v for k, v in os.environ.items() if k != "NOPE_UNSET"}
    env["PYTHONPATH"] = os.path.abspath(SRC)
    r = subprocess.run(
        [sys.executable, "-m", "multihome.simulators", "--api-key-env", "NOPE_UNSET"],
        capture_output=True,
        text=True,
        env=env,
        timeout=10,
    )
    assert r.returncode != 0 and "NOPE_UNSET" in r.stderr
