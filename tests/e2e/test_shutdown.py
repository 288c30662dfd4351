"""A graceful stop (SIGTERM) loses nothing the gateway accepted: calls in flight are answered, and
every answered call's usage row and contract accrual reach the database before the process exits,
even when they were still queued for their next group commit."""

from __future__ import annotations

import datetime as dt
import signal
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import openai

from .processes import Gateway, Simulator

TODAY = dt.datetime.now(dt.timezone.utc).date()
CONFIG = """
storage: {{url_env: MH_TEST_DB}}
server: {{api_keys_env: [MH_TEST_CLIENT]}}
metering:
  writer: {{flush_interval_ms: 60000, batch_size: 100000}}  # rows wait in memory until shutdown
providers:
  oa: {{kind: openai, endpoint: "{url}/v1"}}
deployments:
  d: {{provider: oa, model: m, price: {{input: 3, output: 15}}}}
model_groups:
  gpt-4o: {{deployments: [d], retries: 0}}
contracts:
  flush_interval_s: 60
  batch_max: 100000
  revenue_share:
    - {{id: rs, rate: "0.5", starts_on: {start}, ends_on: {end}, currency: USD}}
"""
USER = [{"role": "user", "content": "count this call"}]


def test_sigterm_answers_calls_in_flight_and_writes_every_row(tmp_path):
    sim = Simulator("openai", "oa")
    db = tmp_path / "m.db"
    text = CONFIG.format(url=sim.url, start=TODAY - dt.timedelta(days=1), end=TODAY + dt.timedelta(days=30))
    gw = Gateway(text, tmp_path, {"MH_TEST_DB": f"sqlite+aiosqlite:///{db}", "MH_TEST_CLIENT": "client-key"})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0, timeout=30)
    try:
        with ThreadPoolExecutor(16) as pool:
            answered = list(pool.map(lambda _: client.chat.completions.create(model="gpt-4o", messages=USER).usage,
                                     range(60)))
        # Three more calls are still waiting on the provider when the stop signal arrives.
        sim.fault(latency_ms=700)
        late: list = []
        threads = [threading.Thread(target=lambda: late.append(
            client.chat.completions.create(model="gpt-4o", messages=USER).usage)) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        stderr = gw.stop(sig_timeout=20)
        for t in threads:
            t.join(10)
        # uvicorn re-raises the signal once its graceful shutdown is done: -SIGTERM is a clean stop.
        assert gw.popen.returncode in (0, -signal.SIGTERM), stderr
        assert "Traceback" not in stderr, stderr
        assert len(late) == 3, "calls in flight at SIGTERM must still be answered"
    finally:
        gw.stop()
        sim.stop()

    usages = answered + late
    cost = sum((Decimal(u.prompt_tokens * 3 + u.completion_tokens * 15) / 1_000_000 for u in usages), Decimal(0))
    with sqlite3.connect(db) as conn:
        rows, tokens = conn.execute("SELECT count(*), sum(prompt_tokens + completion_tokens) FROM usage_calls").fetchone()
        accruals = conn.execute("SELECT amount FROM ledger_accruals WHERE contract_id = 'rs'").fetchall()
    assert rows == 63 and tokens == sum(u.prompt_tokens + u.completion_tokens for u in usages)
    assert len(accruals) == 63 and sum(Decimal(a) for (a,) in accruals) == cost * Decimal("0.5")
