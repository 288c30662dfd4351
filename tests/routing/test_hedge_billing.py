"""A hedge's two deployments can both answer: the one not served is billed by its provider all the
same, so its attempt must carry its answer for the call's accounting (accounting/tracker.py `_unserved`)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import msgspec

from multihome.routing.attempts import Attempt, AttemptRunner, _Result, _Walk
from multihome.schema.peek import peek_decoder

ANSWER = msgspec.json.encode(
    {
        "id": "c",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12},
    }
)


class _BothAnswer(_Walk):
    """Each deployment answers 200 when `release` is set (after the hedge started the second one)."""

    release: asyncio.Event | None = None
    started: int = 0

    async def _with_retries(self, dep):  # type: ignore[override]
        assert self.release is not None
        self.started += 1
        await self.release.wait()
        self.attempts.append(Attempt(dep.name, "ok", 1.0))
        return _Result("ok", "ok", status=200, body=ANSWER, peek=peek_decoder.decode(ANSWER))


async def _race() -> tuple[_BothAnswer, str]:
    policy = SimpleNamespace(hedge_after_ms=10, fail_over_on=["capacity", "unavailable"])
    walk = _BothAnswer(AttemptRunner(), SimpleNamespace(policy=policy), policy, None, None, False, False, [])
    walk.release = asyncio.Event()
    race = asyncio.ensure_future(walk._hedged(SimpleNamespace(name="a"), SimpleNamespace(name="b")))
    while walk.started < 2:
        await asyncio.sleep(0.005)
    walk.release.set()  # both answer in the same turn of the loop
    result, served_by = await race
    assert result.kind == "ok"
    return walk, served_by.name


def test_a_hedge_loser_that_answered_too_is_billed_not_dropped():
    walk, served = asyncio.run(_race())
    billed = [a for a in walk.attempts if a.billed is not None]
    assert len(walk.attempts) == 2 and len(billed) == 1
    [lost] = billed
    assert lost.deployment != served and lost.outcome == "hedge_lost"
    dep, peek = lost.billed
    assert dep.name == lost.deployment and peek.usage.completion_tokens == 5


class _Slow(_Walk):
    """Each deployment works until cancelled (an upstream call in flight), recording its cancel as `_one` does."""

    started: int = 0

    async def _with_retries(self, dep):  # type: ignore[override]
        self.started += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.attempts.append(Attempt(dep.name, "cancelled", 1.0))
            raise
        raise AssertionError("unreachable")


async def _left_during_the_hedge_delay() -> tuple[_Slow, list[asyncio.Task]]:
    policy = SimpleNamespace(hedge_after_ms=60_000, fail_over_on=["capacity", "unavailable"])
    walk = _Slow(AttemptRunner(), SimpleNamespace(policy=policy), policy, None, None, False, False, [])
    race = asyncio.ensure_future(walk._hedged(SimpleNamespace(name="a"), SimpleNamespace(name="b")))
    while walk.started < 1:
        await asyncio.sleep(0.005)
    race.cancel()  # the client hung up before the second deployment was due (api/head_limit.py)
    try:
        await race
    except asyncio.CancelledError:
        pass
    running = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    for task in running:
        task.cancel()
    return walk, running


def test_a_call_cancelled_before_its_hedge_starts_cancels_the_first_deployment_s_call():
    # The first deployment's call ran in a task of its own, which the wait for the hedge's delay did not cancel
    # when the call was: its upstream call ran to its end (the provider billed it) for a call already recorded,
    # its attempt missing from the record.
    walk, running = asyncio.run(_left_during_the_hedge_delay())
    assert not running, "the first deployment's call outlived the call"
    assert [(a.deployment, a.outcome) for a in walk.attempts] == [("a", "cancelled")]


class _SlowToStop(_Walk):
    """`b` answers once the hedge started it; `a`, the loser, takes a while to stop when cancelled (its
    upstream connection closing), as `_one` recording its attempt does."""

    started: int = 0
    stopping: asyncio.Event | None = None
    release: asyncio.Event | None = None

    async def _with_retries(self, dep):  # type: ignore[override]
        assert self.stopping is not None and self.release is not None
        self.started += 1
        if dep.name == "b":
            self.attempts.append(Attempt(dep.name, "ok", 1.0))
            return _Result("ok", "ok", status=200, body=ANSWER, peek=peek_decoder.decode(ANSWER))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.stopping.set()
            await self.release.wait()
            self.attempts.append(Attempt(dep.name, "cancelled", 1.0))
            raise
        raise AssertionError("unreachable")


async def _hung_up_while_the_loser_stops() -> tuple[_SlowToStop, BaseException | object]:
    policy = SimpleNamespace(hedge_after_ms=10, fail_over_on=["capacity", "unavailable"])
    walk = _SlowToStop(AttemptRunner(), SimpleNamespace(policy=policy), policy, None, None, False, False, [])
    walk.stopping, walk.release = asyncio.Event(), asyncio.Event()
    race = asyncio.ensure_future(walk._hedged(SimpleNamespace(name="a"), SimpleNamespace(name="b")))
    await walk.stopping.wait()  # `b` won; the hedge waits for `a` to stop
    race.cancel()  # the client hung up meanwhile (api/head_limit.py)
    walk.release.set()
    try:
        outcome: BaseException | object = await race
    except asyncio.CancelledError as exc:
        outcome = exc
    return walk, outcome


def test_a_hang_up_while_the_hedge_s_loser_stops_cancels_the_call():
    # The wait for the loser to stop took the call's own cancel for the loser's and dropped it: the call went on
    # (its answer sent to nobody, or a stream read on) as if its client were there.
    walk, outcome = asyncio.run(_hung_up_while_the_loser_stops())
    assert isinstance(outcome, asyncio.CancelledError), f"the call went on: {outcome!r}"
    # The loser still recorded; the winner's answer, not served now, is billed by its provider: charged.
    assert [(a.deployment, a.outcome) for a in walk.attempts] == [("b", "hedge_lost"), ("a", "cancelled")]
    dep, peek = walk.attempts[0].billed
    assert dep.name == "b" and peek.usage.completion_tokens == 5
