"""The per-tenant tally (tenant_tally.py) on its own: a tenant's cap, the total of all, a tenant holding none
not kept (nor its turns), and counts given back on other threads."""

from __future__ import annotations

import threading

import pytest

from multihome.tenant_tally import TallyFull, TenantTally, TenantTurns


def test_a_tenant_is_refused_past_its_cap_and_all_past_the_total():
    tally = TenantTally(2, total=3)
    tally.take("acme")
    tally.take("acme")
    with pytest.raises(TallyFull) as mine:
        tally.take("acme")
    assert (mine.value.held, mine.value.everyone) == (2, False)
    tally.take("other")
    with pytest.raises(TallyFull) as all_of_them:
        tally.take("third")
    assert (all_of_them.value.held, all_of_them.value.everyone) == (3, True)
    tally.take("acme", may_refuse=False)  # counted past both bounds
    assert tally.held == {"acme": 3, "other": 1}
    assert [tally.give("acme") for _ in range(3)] == [2, 1, 0]
    assert tally.give("other") == 0 and tally.held == {} and tally.everyone == 0


def test_counts_given_back_on_other_threads_add_up():
    tally = TenantTally(None)
    for _ in range(4000):
        tally.take("acme")

    def give() -> None:
        for _ in range(1000):
            tally.give("acme")

    threads = [threading.Thread(target=give) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tally.held == {} and tally.everyone == 0


def test_a_tenants_turns_are_kept_while_it_holds_any():
    turns = TenantTurns(1, cap=2)
    turns.take("acme")
    first = turns.turns["acme"]
    turns.take("acme")
    assert turns.turns["acme"] is first  # one semaphore: the second waits for the first's turn
    with pytest.raises(TallyFull):
        turns.take("acme")
    assert turns.give("acme") == 1 and turns.turns["acme"] is first
    assert turns.give("acme") == 0 and turns.turns == {} and turns.held == {}
