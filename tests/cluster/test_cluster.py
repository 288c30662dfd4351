"""Three replicas behind HAProxy on one PostgreSQL and one Redis (tests/cluster/cluster.py), driven
through the balancer with the openai SDK: mixed load (chat, streams, Responses, a rate-limited group,
a budgeted key), then a replica killed with SIGKILL mid-load. Every loop is bounded in calls and time.

Checked against the client's own record of the request ids it got a 2xx for: each has its usage row
(graceful stops write every queued row; a killed replica's restart replays its usage spool) and its durable `call_started` audit event; rate limits admit
exactly their count; the budget's spend stays within its amount (docs/metering.md: with `max_tokens`,
spend never exceeds a hard budget); every replica's audit chain verifies.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal

import httpx
import openai

from e2e.helpers import stale_for, until
from multihome.audit import AuditReader, Filters

from .cluster import ADMIN_KEY, BUDGET, BUDGET_KEY, CLIENT_KEY, LEASE_S, RATE_LIMIT, SHARE_RATE, Cluster

USER = [{"role": "user", "content": "hello there"}]
CONCURRENCY = 16


def _client(cluster: Cluster, key: str = CLIENT_KEY, retries: int = 0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=cluster.url + "/v1", api_key=key, max_retries=retries, timeout=30)


async def _chat(client: openai.AsyncOpenAI, model: str, **extra) -> tuple[int, str]:
    """(status, request id) of one non-streamed chat call; a refusal's status from the SDK's error."""
    try:
        raw = await client.chat.completions.with_raw_response.create(model=model, messages=USER, **extra)
    except openai.APIStatusError as exc:
        return exc.status_code, exc.response.headers.get("x-request-id", "")
    assert raw.parse().choices[0].message.content
    return raw.status_code, raw.headers["x-request-id"]


async def _limited(client: openai.AsyncOpenAI) -> tuple[int, bool]:
    """(status, whether it was admitted without limits) of one call on the rate-limited group: with
    `fail_open`, a replica whose Redis call outlived its timeout admits without limits and says so in
    `x-multihome-limits: unavailable` (docs/metering.md)."""
    try:
        raw = await client.chat.completions.with_raw_response.create(model="limited", messages=USER)
    except openai.APIStatusError as exc:
        return exc.status_code, False
    assert raw.parse().choices[0].message.content
    return raw.status_code, raw.headers.get("x-multihome-limits") == "unavailable"


async def _stream(client: openai.AsyncOpenAI) -> tuple[int, str]:
    """A stream counts as answered only once it ran to its end."""
    raw = await client.chat.completions.with_raw_response.create(model="chat", messages=USER, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
    assert text
    return raw.status_code, raw.headers["x-request-id"]


async def _response(client: openai.AsyncOpenAI) -> tuple[int, str]:
    raw = await client.responses.with_raw_response.create(model="chat", input="hello there")
    assert raw.parse().output_text
    return raw.status_code, raw.headers["x-request-id"]


async def _bounded(calls, deadline_s: float) -> list:
    """Run the call factories CONCURRENCY at a time, within deadline_s in all; exceptions are results."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(make):
        async with gate:
            return await make()

    return await asyncio.wait_for(asyncio.gather(*(one(c) for c in calls), return_exceptions=True), deadline_s)


def _minute() -> int:
    return int(time.time() // 60)


async def _rate_burst(cluster: Cluster) -> list[int]:
    """RATE_LIMIT + 15 calls on the limited group within one UTC minute. A burst that straddles a
    minute boundary is run again from the start of the minute after the one it ended in: its calls
    after the boundary were counted in the new minute's window, so that window is not fresh (run again
    at once, the burst met a window the first one had partly used and got fewer than RATE_LIMIT). So is
    one in which a replica admitted a call without limits (its Redis call timed out on a starved machine:
    the documented fail-open, announced in a header), which says nothing of the shared count."""
    client = _client(cluster)
    try:
        for _ in range(3):
            start = _minute()
            out = await _bounded([lambda: _limited(client) for _ in range(RATE_LIMIT + 15)], 60)
            end = _minute()
            if end == start and not any(r[1] for r in out if not isinstance(r, BaseException)):
                return [repr(r) if isinstance(r, BaseException) else r[0] for r in out]
            await asyncio.sleep(max(0.0, (end + 1) * 60 - time.time()) + 0.05)
        raise AssertionError("three bursts in a row straddled a minute boundary or were admitted without limits")
    finally:
        await client.close()


def _started_ids(cluster: Cluster) -> set[str]:
    out: set[str] = set()
    for i in range(len(cluster.replicas)):
        reader = AuditReader(str(cluster.audit_dir(i)))
        out |= {e["body"]["request_id"] for _, e in reader.iter_events(Filters(kind="call_started"))}
    return out


def _verify_audit(cluster: Cluster) -> None:
    for i, replica in enumerate(cluster.replicas):
        proc = subprocess.run(
            [sys.executable, "-m", "multihome.cli", "audit", "verify", "--dir", str(cluster.audit_dir(i))]
            + ["--public-key", str(cluster.public_key), "--config", str(replica.config_path)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **cluster.env},
        )
        assert proc.returncode == 0, f"{replica.name}: {proc.stdout}{proc.stderr}"
        for line in proc.stderr.splitlines():  # only what a crash may leave
            assert any(k in line for k in ("torn_tail", "unsigned_tail")), line


def _usage_ids(cluster: Cluster) -> set[str]:
    return set(cluster.sql("SELECT request_id FROM usage_calls"))


def test_mixed_load_through_the_balancer(cluster: Cluster):
    async def load():
        client, budgeted = _client(cluster), _client(cluster, BUDGET_KEY)
        try:
            calls = [lambda: _chat(client, "chat") for _ in range(120)]
            calls += [lambda: _stream(client) for _ in range(40)]
            calls += [lambda: _response(client) for _ in range(20)]
            calls += [lambda: _chat(budgeted, "budgeted", max_tokens=32) for _ in range(60)]
            mixed, rate = await asyncio.gather(_bounded(calls, 240), _rate_burst(cluster))
            return mixed, rate
        finally:
            await client.close()
            await budgeted.close()

    mixed, rate = asyncio.run(load())
    errors = [r for r in mixed if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    answered = {rid for status, rid in mixed if 200 <= status < 300}
    budget_statuses = [status for status, _ in mixed[180:]]
    assert len(answered) == 180 + budget_statuses.count(200)
    # Rate limit: exactly its count, whichever replica each call reached.
    assert rate.count(200) == RATE_LIMIT and rate.count(429) == 15, Counter(rate)
    assert 429 in budget_statuses and 200 in budget_statuses, budget_statuses
    logs = cluster.stop_replicas()
    assert all("POST /v1/chat/completions 200" in log for log in logs), "every replica served calls"
    # Nothing acknowledged is missing: usage rows (after graceful stops) and durable call_started events.
    missing_usage = answered - _usage_ids(cluster)
    assert not missing_usage, f"{len(missing_usage)} answered calls have no usage row"
    assert not answered - _started_ids(cluster)
    spent = Decimal(
        cluster.sql("SELECT coalesce(sum(cost_nanos), 0) FROM usage_calls WHERE key_id = 'env:MH_CL_BUDGET'")[0]
    )
    assert Decimal(0) < spent / Decimal(10**9) <= Decimal(BUDGET), spent
    _verify_audit(cluster)


def test_sigkill_of_one_replica_mid_load_loses_no_acknowledged_call(cluster: Cluster):
    answered: list[str] = []
    failed: list[str] = []
    victim = cluster.replicas[1]

    async def load():
        # The SDK retries what the dead replica cut (a connection error): HAProxy sends it to another one.
        client = _client(cluster, retries=3)
        done = 0
        deadline = time.monotonic() + 120

        async def worker(n: int) -> None:
            nonlocal done
            for i in range(25):  # CONCURRENCY x 25 calls at most
                if time.monotonic() > deadline:
                    return
                try:
                    status, rid = await (_stream(client) if (n + i) % 3 == 0 else _chat(client, "chat"))
                except (openai.APIError, AssertionError) as exc:
                    failed.append(repr(exc))
                    continue
                if status == 200:
                    answered.append(rid)
                done += 1

        async def killer() -> None:
            while done < 120:
                await asyncio.sleep(0.02)
            victim.popen.kill()  # SIGKILL: no drain, no flush

        try:
            await asyncio.gather(killer(), *(worker(n) for n in range(CONCURRENCY)))
        finally:
            await client.close()

    asyncio.run(load())
    victim.popen.wait(10)
    served_by_victim = {
        line.split("request_id=")[1].split()[0] for line in victim.output().splitlines() if "request_id=" in line
    }
    assert len(answered) >= 300, (len(answered), failed[:5])
    cluster.restart(1)  # back at its address with its audit and spool directories: its chain continues
    replayed = [line for line in cluster.replicas[1].output().splitlines() if "rows replayed" in line]
    cluster.stop_replicas()
    acked = set(answered)
    assert not acked - _started_ids(cluster), "an acknowledged call has no durable call_started event"
    missing = acked - _usage_ids(cluster)
    # docs/metering.md "The usage spool": the killed replica's rows still in its writer's memory were in
    # its spool directory; its restart wrote them before it became ready.
    print(
        f"\nSIGKILL: {len(acked)} acknowledged ({len(acked & served_by_victim)} by the killed replica), "
        f"{len(missing)} usage rows lost, {len(failed)} calls failed at the client; "
        f"restart: {replayed[0].split('usage spool: ')[-1] if replayed else 'nothing to replay'}; "
        f"{dt.datetime.now(dt.UTC):%H:%M:%S}"
    )
    assert acked & served_by_victim, "the killed replica acknowledged nothing: the test proves nothing"
    assert not missing, (
        f"{len(missing)} acknowledged calls have no usage row ({len(missing & served_by_victim)} by the victim)"
    )
    _verify_audit(cluster)


TERMINAL = {"completed", "failed", "cancelled", "incomplete"}
BACKGROUND = 12


def _ledger_lost(cluster: Cluster) -> tuple[set[str], set[str]]:
    """(usage rows of the revenue share's provider with no accrual, accruals with no usage row)."""
    usage = set(cluster.sql("SELECT request_id FROM usage_calls WHERE provider = 'sim' AND cost_nanos > 0"))
    accrued = cluster.sql("SELECT request_id FROM ledger_accruals WHERE contract_id = 'rs-cluster'")
    assert len(accrued) == len(set(accrued))  # (contract, request) is the ledger's key
    return usage - set(accrued), set(accrued) - usage


def test_sigkill_of_the_replica_running_background_responses(cluster: Cluster):
    """Background responses (and stored foreground ones, and chat) through the balancer; the replica
    holding the most running background jobs is killed with SIGKILL. Every background response still
    completes (another replica claims its job once the lease runs out), each is billed once (one usage
    row per response, however many runs), every stored response and acknowledged call is kept, and the
    contract ledger has exactly one accrual per billed call (the victim's restart replays its spool)."""
    assert cluster.sim is not None
    cluster.sim.fault(match="slow-model", chunk_delay_ms=250, chunks=16)  # ~4 s a run: the kill lands mid-run
    answered: list[str] = []
    stored: list[str] = []
    background: list[str] = []
    failed: list[str] = []
    pid_of = {r.popen.pid: i for i, r in enumerate(cluster.replicas)}
    victim: list[int] = []

    def running_owners() -> list[str]:
        return cluster.sql("SELECT lease_owner FROM jobs WHERE kind = 'response' AND status = 'running'")

    async def load():
        client = _client(cluster, retries=3)
        deadline = time.monotonic() + 90

        async def create_background() -> None:
            made = await client.responses.create(model="slow", input="survive the kill", background=True)
            assert made.status in ("queued", "in_progress")
            background.append(made.id)

        async def worker(n: int) -> None:
            for i in range(20):
                if time.monotonic() > deadline:
                    return
                try:
                    if i % 2 == 0:
                        raw = await client.responses.with_raw_response.create(model="chat", input="keep me", store=True)
                        stored.append(raw.parse().id)
                        answered.append(raw.headers["x-request-id"])
                    else:
                        status, rid = await _chat(client, "chat")
                        if status == 200:
                            answered.append(rid)
                except (openai.APIError, AssertionError) as exc:
                    failed.append(repr(exc))

        async def killer() -> None:
            await asyncio.gather(*(create_background() for _ in range(BACKGROUND)))
            while time.monotonic() < deadline:  # the replica with the most running jobs, mid-run
                owners = await asyncio.to_thread(running_owners)
                counts: dict[int, int] = {}
                for owner in owners:
                    pid = int(owner.split(":")[-2])
                    if pid in pid_of:
                        counts[pid_of[pid]] = counts.get(pid_of[pid], 0) + 1
                if counts:
                    victim.append(max(counts, key=lambda i: counts[i]))
                    cluster.replicas[victim[0]].popen.kill()  # SIGKILL: no drain, no hand-back of its jobs
                    return
                await asyncio.sleep(0.1)

        try:
            await asyncio.gather(killer(), *(worker(n) for n in range(8)))
        finally:
            await client.close()

    asyncio.run(load())
    assert victim, "no background job was seen running: the test proves nothing"
    assert len(background) == BACKGROUND, failed[:3]
    killed = cluster.replicas[victim[0]]
    killed.popen.wait(10)
    killed_at = time.monotonic()

    async def settle() -> dict[str, str]:
        client = _client(cluster, retries=3)
        status: dict[str, str] = {}
        try:
            while time.monotonic() - killed_at < 120 and len(status) < len(background):
                for rid in background:
                    if rid not in status:
                        got = await client.responses.retrieve(rid)
                        if got.status in TERMINAL:
                            status[rid] = got.status
                await asyncio.sleep(0.25)
            for rid in stored:  # every stored response acknowledged before or after the kill is kept
                assert (await client.responses.retrieve(rid)).status == "completed"
        finally:
            await client.close()
        return status

    status = asyncio.run(settle())
    took = time.monotonic() - killed_at
    assert sorted(status) == sorted(background), f"{len(background) - len(status)} background responses never ended"
    assert set(status.values()) == {"completed"}, status
    runs = sum(1 for r in cluster.sim.requests() if "survive the kill" in str(r.get("body")))
    cluster.restart(victim[0])  # its spool: usage rows and ledger accruals it had not committed
    cluster.stop_replicas()
    billed = cluster.sql("SELECT request_id FROM usage_calls WHERE model_group = 'slow'")
    assert len(billed) == BACKGROUND, f"{len(billed)} usage rows for {BACKGROUND} background responses"
    acked = set(answered)
    assert not acked - _usage_ids(cluster), "an acknowledged call has no usage row"
    no_accrual, no_usage = _ledger_lost(cluster)
    assert not no_accrual and not no_usage, (len(no_accrual), len(no_usage))
    costs = cluster.sql("SELECT coalesce(sum(cost_nanos), 0) FROM usage_calls WHERE provider = 'sim'")[0]
    accrued = sum(
        Decimal(a) for a in cluster.sql("SELECT amount FROM ledger_accruals WHERE contract_id = 'rs-cluster'")
    )
    assert accrued == Decimal(costs) / 10**9 * Decimal(SHARE_RATE)
    print(
        f"\nSIGKILL of {killed.name} holding background jobs: {BACKGROUND} background responses completed "
        f"{took:.1f} s after the kill (lease {LEASE_S} s), {runs} upstream runs, each billed once; "
        f"{len(acked)} calls acknowledged, {len(stored)} stored responses kept, {len(failed)} failed at the client; "
        f"ledger: one accrual per billed call; {dt.datetime.now(dt.UTC):%H:%M:%S}"
    )
    _verify_audit(cluster)


def test_a_revoked_key_is_refused_by_every_replica_within_a_second(cluster: Cluster):
    """An admin change made through the balancer (one replica) reaches the others through the database
    (storage.refresh_s): no replica may accept the key on a call sent a second after the revocation's
    answer, allowing its own slowest answer meanwhile (helpers.stale_for: measured on the replica's
    side, not by when this test, polling the replicas in turn, got round to each)."""
    admin = httpx.Client(base_url=cluster.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    body = {"model": "chat", "messages": USER}
    try:
        tenant = admin.post("/admin/v1/tenants", json={"name": "acme"}).json()["id"]
        made = admin.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "app"}).json()
        headers = {"authorization": f"Bearer {made['key']}"}

        def status(replica) -> int:
            return httpx.post(replica.url + "/v1/chat/completions", json=body, headers=headers, timeout=30).status_code

        until(lambda: all(status(r) == 200 for r in cluster.replicas), what="the new key on every replica")
        assert admin.delete(f"/admin/v1/tenants/{tenant}/keys/{made['id']}").status_code == 200
        revoked_at = time.monotonic()
        seen = {r.name: stale_for(lambda r=r: status(r) == 401, revoked_at, what=r.name) for r in cluster.replicas}
    finally:
        admin.close()
    print(f"\nrevocation reached every replica: {seen}")
    assert all(s.within(1.0) for s in seen.values()), seen
