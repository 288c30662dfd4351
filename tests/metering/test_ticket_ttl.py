"""A long call's reservation outlives it: the sweeper of unsettled reservations waits at least as
long as the routing config lets a call last (every attempt, backoff and fallback group), so a slow
stream or a call retried after timeouts is settled with its cost, not released as a lost one."""

from __future__ import annotations

import pytest

from multihome.config import parse_config
from multihome.config.call_bound import longest_call_s
from multihome.metering.service import Metering

from .conftest import Dep, principal

pytestmark = pytest.mark.anyio

CONFIG = """
server: {{allow_unauthenticated: true}}
providers:
  sim: {{kind: openai, endpoint: "http://127.0.0.1:9/v1", auth: {{api_key_env: NOPE}}}}
deployments:
  a@sim: {{provider: sim, model: m, price: {{input: 1, output: 2}}}}
  b@sim: {{provider: sim, model: m, price: {{input: 1, output: 2}}}}
model_groups:
  long:
    deployments: [a@sim, b@sim]
    retries: 1
    backoff_ms: 100
    max_retry_after_s: 2
    timeouts: {{connect_s: 5, first_byte_s: 60, total_s: {total}}}
    fallback_groups: [capped]
  capped:
    deployments: [a@sim]
    timeouts: {{budget_s: 100}}
metering:
  budgets: [{{scope: key, id: "*", amount: 100, period: day, mode: hard}}]
"""


def test_the_longest_call_counts_every_attempt_backoff_and_fallback_group():
    config = parse_config(CONFIG.format(total=600))
    # long: 2 deployments x (2 attempts x (5 + 60 + 600) s + one backoff of at most 2 s); then capped: its budget
    assert longest_call_s(config) == pytest.approx(2 * (2 * 665 + 2) + 100)


async def test_a_reservation_older_than_ticket_ttl_is_kept_while_its_call_can_still_be_running():
    config = parse_config(CONFIG.format(total=600))
    assert config.metering.ticket_ttl_s == 900  # the documented default, shorter than this config's calls
    metering = Metering.from_config(config)
    lim = metering.limiter
    assert lim.cfg.ticket_ttl_s >= longest_call_s(config)
    ticket = await lim.admit(principal(), "long", [Dep("a@sim")], 100, 100, "slow")
    ticket.created -= 1000  # running for 1,000 s: past the configured 900 s, within what the config allows
    assert lim.sweep() == 0 and not ticket.settled
    ticket.created -= longest_call_s(config)  # past anything a call can last: the front door lost it
    assert lim.sweep() == 1 and ticket.settled
    await lim.close()


async def test_a_reload_that_makes_calls_longer_keeps_their_reservations_longer():
    metering = Metering.from_config(parse_config(CONFIG.format(total=60)))
    assert metering.limiter.cfg.ticket_ttl_s == 900  # calls here last at most ~630 s: the default stands
    from multihome.metering.service import reservation_config

    longer = parse_config(CONFIG.format(total=6000))
    await metering.reconfigure(reservation_config(longer), metering.prices)
    assert metering.limiter.cfg.ticket_ttl_s >= longest_call_s(longer) > 900
    await metering.limiter.close()
