"""docs/deploy.md "Open streams": each open stream holds two sockets, so `multihome serve` raises its
open-file limit to the hard limit at start-up. Started here under a soft limit of 1024 (`prlimit`), the
served process runs with its soft limit at the hard one."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from builders import yaml_text
from ports import free_port

from .conftest import SECRETS, shared_config
from .helpers import until
from .processes import VENV_BIN, Gateway


def _open_files(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return soft, hard
    raise AssertionError("no open-file limit in /proc")


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
def test_serve_raises_its_open_file_limit_to_the_hard_limit(sims, tmp_path):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip("the hard limit leaves nothing to raise")
    start = ["prlimit", f"--nofile=1024:{'unlimited' if hard == resource.RLIM_INFINITY else hard}", "--"]
    gw = Gateway(shared_config(sims), tmp_path, SECRETS, command=[*start, str(VENV_BIN / "multihome")])
    try:
        soft, raised_to = _open_files(gw.popen.pid)
    finally:
        gw.stop()
    assert soft == raised_to and soft != "1024", (soft, raised_to)


def test_host_and_port_flags_override_the_file(sims, tmp_path):
    """docs/serving.md: `--host` and `--port` override the file's `server.host` and `server.port`. The file
    says 127.0.0.1 and one port; the flags say 127.0.0.2 (loopback too, on Linux) and another: the start-up
    line names the flags' address, which serves, and the file's does not."""
    cfg = shared_config(sims)
    file_port, flag_port = free_port(), free_port()
    cfg["server"].update(host="127.0.0.1", port=file_port)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml_text(cfg))
    log = tmp_path / "serve.log"
    args = ["serve", "--config", str(path), "--host", "127.0.0.2", "--port", str(flag_port)]
    with log.open("w") as out:
        proc = subprocess.Popen([str(VENV_BIN / "multihome"), *args], env={**os.environ, **SECRETS}, stderr=out)
    try:
        until(lambda: _ready(f"http://127.0.0.2:{flag_port}") or proc.poll() is not None, 120, "the gateway")
        assert proc.poll() is None, log.read_text()
        assert f"multihome listening on http://127.0.0.2:{flag_port}" in log.read_text()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{file_port}/healthz", timeout=5)
    finally:
        proc.terminate()
        proc.wait(60)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
