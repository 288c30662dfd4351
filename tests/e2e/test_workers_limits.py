"""`serve --workers N` with budgets and rate limits: the workers hold one limit between them.

With Redis the workers share the counters (each worker is a replica on one machine): a rate limit
lets exactly its limit through however the kernel spreads the connections. Without Redis each
worker would count on its own, so `serve` refuses to start and says what to change.
"""

from __future__ import annotations

import os
import subprocess

import httpx

from builders import api_keys, audit, config, database_env, deployment, group, key_budget, simulated, yaml_text

from .conftest import CLIENT_KEY
from .helpers import in_one_minute
from .processes import VENV_BIN, Gateway, Simulator
from .services import RedisServer

RPM = 9
SECOND_KEY = "mh-test-second-client-key-for-workers"  # a rate counter of its own (helpers.in_one_minute)
ENV = {"MH_TEST_CLIENT_KEY": CLIENT_KEY, "MH_TEST_SECOND_KEY": SECOND_KEY}


def _config(sim: str, **sections) -> dict:
    return config(
        server=api_keys("MH_TEST_CLIENT_KEY", "MH_TEST_SECOND_KEY"),
        providers={"p": simulated("openai", sim)},
        deployments={"d": deployment("p", "m")},
        model_groups={"g": group("d", retries=0)},
        **sections,
    )


def _serve_refused(tmp_path, cfg: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml_text(cfg))
    return subprocess.run(
        [str(VENV_BIN / "multihome"), "serve", "--config", str(path), "--port", "1", "--workers", "2"],
        env={**os.environ, **ENV, "MH_TEST_DB": f"sqlite+aiosqlite:///{tmp_path}/multihome.db"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_two_workers_without_redis_refuse_to_start_when_limits_would_be_counted_apart(tmp_path):
    limited = _config(
        "http://127.0.0.1:9/v1",
        metering={"rate_limits": [{"scope": "key", "id": "*", "requests_per_minute": RPM}]},
    )
    out = _serve_refused(tmp_path, limited)
    assert out.returncode == 2, out.stderr
    assert "metering.rate_limits" in out.stderr and "metering.redis_url_env" in out.stderr
    assert "--workers 1" in out.stderr and "2 times each limit" in out.stderr

    budgeted = _config("http://127.0.0.1:9/v1", metering={"budgets": [key_budget("MH_TEST_CLIENT_KEY", "1")]})
    out = _serve_refused(tmp_path, budgeted)
    assert out.returncode == 2 and "metering.budgets" in out.stderr

    # Storage alone: an admin can set a budget at any time, and each worker would count it apart.
    stored = _config("http://127.0.0.1:9/v1", storage=database_env())
    out = _serve_refused(tmp_path, stored)
    assert out.returncode == 2 and "admin API" in out.stderr


def test_two_workers_with_redis_let_exactly_the_rate_limit_through(tmp_path, sqlite_database):
    redis, sim = RedisServer(), Simulator("openai", "sim")
    trail = tmp_path / "audit"
    gw = None
    try:
        cfg = _config(
            sim.url,
            storage=database_env(),
            audit=audit(trail),
            metering={
                "redis_url_env": "MH_TEST_REDIS_URL",
                "rate_limits": [{"scope": "key", "id": "*", "requests_per_minute": RPM}],
            },
        )
        env = {**ENV, "MH_TEST_REDIS_URL": redis.url, "MH_TEST_DB": sqlite_database()}
        gw = Gateway(cfg, tmp_path, env, "--workers", "2")
        body = {"model": "g", "messages": [{"role": "user", "content": "hi"}]}

        def calls(key: str) -> list[int]:
            statuses = []
            for _ in range(3 * RPM):
                # A new connection per call: the kernel spreads connections over both workers.
                with httpx.Client(timeout=30) as http:
                    r = http.post(
                        gw.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
                    )
                statuses.append(r.status_code)
            return statuses

        statuses = in_one_minute(calls, (CLIENT_KEY, SECOND_KEY))  # the calls inside one rate window
        assert statuses.count(200) == RPM and statuses.count(429) == 2 * RPM, statuses
        gw.stop()
        gw = None
        # Both workers served calls (each writes its own chain, admitted or refused): the limit above was
        # held between them.
        chains = [f.read_text() for f in trail.glob("chn_*.jsonl")]
        assert len(chains) == 2 and all('"request_id"' in text for text in chains)
    finally:
        if gw is not None:
            gw.stop()
        sim.stop()
        redis.stop()
