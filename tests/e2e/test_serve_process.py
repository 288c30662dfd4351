"""docs/deploy.md "Open streams": each open stream holds two sockets, so `multihome serve` raises its
open-file limit to the hard limit at start-up. Started here under a soft limit of 1024 (`prlimit`), the
served process runs with its soft limit at the hard one."""

from __future__ import annotations

import resource
import shutil
from pathlib import Path

import pytest

from .conftest import SECRETS, shared_config
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
