"""docs/console.md "Configuration": `multihome serve --workers N` hands its workers one session key itself,
so a console session made on one worker is read by the others. Two workers, one login, then pages over a
new connection each (the kernel spreads connections over the workers): every one is the page, none the
login form; both workers answered some of them (each worker's own metrics file counts the pages it served)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from prometheus_client.mmap_dict import MmapedDict

from builders import identity

from .conftest import SECRETS, shared_config
from .processes import Gateway

ADMIN_KEY = "mh-console-workers-admin-key"


def test_a_session_made_on_one_worker_is_read_by_the_other(sims, tmp_path):
    cfg = shared_config(sims)
    cfg["identity"] = identity("MH_TEST_CONSOLE_WORKERS_ADMIN")
    cfg["metrics"] = {"enabled": True, "publish_interval_s": 0.2}
    per_worker = tmp_path / "prom"
    env = {**SECRETS, "MH_TEST_CONSOLE_WORKERS_ADMIN": ADMIN_KEY, "PROMETHEUS_MULTIPROC_DIR": str(per_worker)}
    gw = Gateway(cfg, tmp_path, env, "--workers", "2")
    try:
        login = httpx.post(gw.url + "/console/login", data={"key": ADMIN_KEY}, timeout=30)
        assert login.status_code == 303, login.text[:300]
        cookie = re.match(r"mh_console=([^;]+)", login.headers["set-cookie"]).group(1)
        for _ in range(40):
            with httpx.Client(cookies={"mh_console": cookie}, timeout=30) as browser:  # a new connection
                page = browser.get(gw.url + "/console/routing")
            assert page.status_code == 200, (page.status_code, page.headers.get("location"))
            assert "/console/logout" in page.text
    finally:
        gw.stop()  # each worker folds its counts into its own file as it stops
    served = [_console_pages(f) for f in per_worker.glob("counter_*.db")]
    assert len(served) == 2 and all(n > 0 for n in served), served  # both workers read the one session


def _console_pages(path: Path) -> float:
    """The console requests answered 200 that one worker's file counts."""
    total = 0.0
    for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
        _, name, labels, _ = json.loads(key)
        if (
            name == "multihome_http_requests_total"
            and "/console" in labels.get("route", "")
            and labels["status"] == "200"
        ):
            total += value
    return total
