"""An attempt cancelled before its answer (its client hung up, a hedge lost, the routing budget, a drain) is
billed by the provider once its request was sent, the prompt at least: its attempt carries that for the
call's accounting (accounting/tracker.py `_unserved`: the prompt's estimate). One cancelled while it waited for
a connection of its provider sent nothing, and carries nothing."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from multihome.providers.gate import Gate
from multihome.routing.attempts import UNANSWERED, AttemptRunner, _Walk


class _Client:
    def __init__(self) -> None:
        self.posted = asyncio.Event()

    async def post(self, url, headers, body):
        self.posted.set()
        await asyncio.Event().wait()  # the upstream works on


async def _cancelled_attempt(free_connection: bool):
    dep = SimpleNamespace(name="a")
    client, gate = _Client(), Gate(1)
    if not free_connection:
        assert gate.take()  # the provider's one connection is busy with another call
    group = SimpleNamespace(clients={"a": (client, gate)}, timeouts=(None, None, None))
    policy = SimpleNamespace(hedge_after_ms=None, fail_over_on=["capacity", "unavailable"])

    async def build(dep):
        return SimpleNamespace(headers={}, fan_out=None, url="http://up/v1/chat/completions", body=b"{}")

    walk = _Walk(AttemptRunner(), group, policy, build, None, False, False, [])
    task = asyncio.ensure_future(walk._one(dep))
    for _ in range(100):
        await asyncio.sleep(0)
    assert client.posted.is_set() == free_connection
    task.cancel()  # the client hung up (api/head_limit.py)
    with pytest.raises(asyncio.CancelledError):
        await task
    [attempt] = walk.attempts
    return dep, attempt, gate


def test_an_attempt_cancelled_once_its_request_was_sent_carries_its_prompt_for_the_books():
    dep, attempt, gate = asyncio.run(_cancelled_attempt(free_connection=True))
    assert attempt.outcome == "cancelled" and attempt.billed == (dep, UNANSWERED)
    assert gate.free == 1  # its connection's permit given back


def test_an_attempt_cancelled_while_it_waited_for_a_connection_carries_nothing():
    dep, attempt, gate = asyncio.run(_cancelled_attempt(free_connection=False))
    assert attempt.outcome == "cancelled" and attempt.billed is None
    assert gate.free == 0 and not gate._waiters  # the other call still holds its permit; no waiter left behind


class _Slow:
    """An upstream whose request times out in pyqwest after `after` seconds (pyqwest says TimeoutError
    for its connect, read and total timeouts alike)."""

    def __init__(self, after: float) -> None:
        self.after = after

    async def post(self, url, headers, body):
        await asyncio.sleep(self.after)
        raise TimeoutError("Request failed: error sending request for url (http://up/): operation timed out")


async def _timed_out_attempt(after: float):
    dep = SimpleNamespace(name="a")
    gate = Gate(1)
    # connect_s 0.05, first_byte_s 0.3, total_s 1.0: a timeout sooner than 0.3 s can only be the connect's.
    group = SimpleNamespace(clients={"a": (_Slow(after), gate)}, timeouts=(0.05, 0.3, 1.0))
    policy = SimpleNamespace(hedge_after_ms=None, fail_over_on=["capacity", "unavailable"])

    async def build(dep):
        return SimpleNamespace(headers={}, fan_out=None, url="http://up/v1/chat/completions", body=b"{}")

    walk = _Walk(AttemptRunner(), group, policy, build, None, False, False, [])
    result = await walk._one(dep)
    [attempt] = walk.attempts
    return dep, attempt, result, gate


def test_an_attempt_timed_out_waiting_for_its_answer_carries_its_prompt_for_the_books():
    dep, attempt, result, gate = asyncio.run(_timed_out_attempt(after=0.31))
    assert result.label == "timeout" and attempt.outcome == "timeout"
    assert attempt.billed == (dep, UNANSWERED)  # read by the provider, billed: charged its prompt's estimate
    assert gate.free == 1


def test_an_attempt_timed_out_while_it_connected_carries_nothing():
    dep, attempt, result, gate = asyncio.run(_timed_out_attempt(after=0.06))
    assert result.label == "timeout" and attempt.outcome == "timeout" and attempt.billed is None
    assert gate.free == 1
