"""Background responses end to end: the real gateway (managed keys, local KMS) over a slow OpenAI
simulator, driven with the official openai SDK. Polling, streaming and resuming with
`starting_after`, cancel, and kill -9 of the gateway mid-response: a second gateway on the same
database finishes it, and the simulator's request log and the usage rows show what was called and billed."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import time
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest
import sqlalchemy as sa

from builders import breakers, config, database, deployment, groups, identity, price, simulated
from multihome.crypto import init_key_file

from .helpers import finished, until
from .processes import Gateway, Simulator, local_http
from .stores import head_database

ADMIN_KEY = "mh-background-e2e-admin"
SECRETS = {"MH_BG_ADMIN_KEY": ADMIN_KEY}
FAST = {"background": {"lease_s": 2.0, "poll_s": 0.1, "event_flush_ms": 50}}


TODAY = dt.datetime.now(dt.UTC).date()
SHARE = {  # half of the metered cost accrues to the ledger: one accrual per billed call
    "id": "rs-bg",
    "parties": ["Us", "Them"],
    "rate": "0.5",
    "basis": {"providers": ["oa"]},
    "starts_on": TODAY - dt.timedelta(days=10),
    "ends_on": TODAY + dt.timedelta(days=300),
    "currency": "USD",
}


def gateway_config(tmp: Path, db: str, sim: Simulator) -> dict:
    return config(
        storage=database(db),
        kms={"local": {"key_file": str(tmp / "kms.key")}},
        identity=identity("MH_BG_ADMIN_KEY"),
        routing=breakers(0),
        providers={"oa": simulated("openai", sim.url)},
        deployments={"oa": deployment("oa", "gpt-bg", price=price(1_000_000, 1_000_000))},  # $1 a token
        model_groups=groups({"gpt": "oa"}, retries=0),
        contracts={"flush_interval_s": 0.02, "revenue_share": [SHARE]},
        responses=FAST,
    )


def new_key(gateway: Gateway, name: str) -> str:
    admin = local_http(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    with admin:
        resp = admin.post("/admin/v1/tenants", json={"name": name})
        assert resp.status_code == 201, resp.text
        tenant = resp.json()["id"]
        resp = admin.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "k", "roles": ["member"]})
        assert resp.status_code == 201, resp.text
        return resp.json()["key"]


def sdk(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=30)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"background-{request.param}")
    db = head_database(request, request.param, tmp)
    init_key_file(tmp / "kms.key")
    sim = Simulator("openai", "bg-openai")
    gateway = None
    try:
        gateway = Gateway(gateway_config(tmp, db, sim), tmp, SECRETS)
        yield gateway, sim, new_key(gateway, "acme"), new_key(gateway, "globex")
    finally:
        log = gateway.stop() if gateway is not None else ""
        sim.stop()
        assert "Traceback" not in log, log[-3000:]


def test_a_background_response_is_queued_then_completes_by_polling(world):
    gateway, sim, key, other = world
    sim.clear_faults()
    client = sdk(gateway, key)
    created = client.responses.create(model="gpt", input="background please", background=True)
    assert created.status in ("queued", "in_progress") and created.background is True
    done = until(lambda: (r := client.responses.retrieve(created.id)).status == "completed" and r, what="completed")
    assert done.background is True and "background please" in done.output_text and done.usage.output_tokens > 0
    with pytest.raises(openai.NotFoundError):  # another tenant cannot see it
        sdk(gateway, other).responses.retrieve(created.id)
    follow = client.responses.create(model="gpt", input="and then?", previous_response_id=created.id)
    assert follow.status == "completed"  # a finished background response continues like any other
    conv = client.conversations.create()
    turn = client.responses.create(model="gpt", input="into the conversation", conversation=conv.id, background=True)
    until(lambda: client.responses.retrieve(turn.id).status == "completed", what="the conversation's turn")
    items = client.conversations.items.list(conv.id, order="asc").data
    assert [i.role for i in items] == ["user", "assistant"]  # the turn was appended with its answer
    assert [i.id for i in client.responses.input_items.list(turn.id).data] == [items[0].id]


def test_background_needs_store_and_only_background_responses_cancel(world):
    gateway, sim, key, _ = world
    client = sdk(gateway, key)
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="gpt", input="x", background=True, store=False)
    assert err.value.body["param"] == "background"
    plain = client.responses.create(model="gpt", input="foreground")
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(plain.id)
    with pytest.raises(openai.BadRequestError):  # only background responses created with stream can be streamed
        list(client.responses.retrieve(plain.id, stream=True))


def test_a_background_turn_is_checked_at_once_and_a_refused_one_fails(world):
    gateway, sim, key, _ = world
    client = sdk(gateway, key)
    with pytest.raises(openai.NotFoundError):  # an unknown model is refused at the create, like a foreground turn
        client.responses.create(model="nope", input="x", background=True)
    with pytest.raises(openai.BadRequestError):  # so is a continuation of nothing
        client.responses.create(model="gpt", input="x", previous_response_id="resp_missing", background=True)
    sim.fault(status=400, times=1)
    created = client.responses.create(model="gpt", input="refused upstream", background=True)
    failed = finished(client, created.id)
    assert failed.status == "failed" and failed.error is not None and failed.error.message


def test_the_sdk_stream_helper_follows_a_background_response(world):
    gateway, sim, key, _ = world
    sim.fault(chunk_delay_ms=30, chunks=8)
    client = sdk(gateway, key)
    with client.responses.create(model="gpt", input="follow me", background=True, stream=True) as s:
        response_id = next(iter(s)).response.id
    with client.responses.stream(response_id=response_id, starting_after=3) as stream:
        final = stream.get_final_response()
    sim.clear_faults()
    assert final.status == "completed" and "follow me" in final.output_text and final.background is True


def test_a_streamed_background_response_resumes_after_any_event_without_gaps(world):
    gateway, sim, key, _ = world
    sim.fault(chunk_delay_ms=60, chunks=12)
    client = sdk(gateway, key)
    seen = []
    with client.responses.create(model="gpt", input="stream in the background", background=True, stream=True) as s:
        for event in s:
            seen.append(event)
            if event.type == "response.output_text.delta" and len(seen) >= 6:
                break  # the client drops the connection mid-stream
    response_id = seen[0].response.id
    assert seen[0].type == "response.created" and seen[0].response.background is True
    assert seen[1].type == "response.queued"
    cursor = seen[-1].sequence_number
    assert [e.sequence_number for e in seen] == list(range(cursor + 1))
    rest = list(client.responses.retrieve(response_id, stream=True, starting_after=cursor))
    sim.clear_faults()
    numbers = [e.sequence_number for e in rest]
    assert numbers == list(range(cursor + 1, cursor + 1 + len(rest)))  # no gap, no repeat
    assert rest[-1].type == "response.completed"
    text = "".join(e.delta for e in [*seen, *rest] if e.type == "response.output_text.delta")
    assert text == rest[-1].response.output_text
    again = list(client.responses.retrieve(response_id, stream=True, starting_after=2))  # replay after the end
    assert [e.sequence_number for e in again] == list(range(3, numbers[-1] + 1))
    raw = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {key}"}, timeout=10)
    with raw:  # a cursor that is no sequence number (or would overflow the database's integer) is a 400
        for bad in ("x", "1e3", "99999999999999999999999999", "\u0663", "--1"):
            resp = raw.get(f"/v1/responses/{response_id}", params={"stream": "true", "starting_after": bad})
            assert resp.status_code == 400 and resp.json()["error"]["param"] == "starting_after", (bad, resp.text)


def test_cancel_stops_a_running_response_and_is_idempotent(world):
    gateway, sim, key, other = world
    sim.fault(chunk_delay_ms=300, chunks=40)
    client = sdk(gateway, key)
    # Streamed, to cancel once the run has produced some output (its first delta), whatever the machine's load.
    live = client.responses.create(model="gpt", input="a long one", background=True, stream=True)
    created = None
    for event in live:
        if event.type == "response.created":
            created = event.response
        if event.type == "response.output_text.delta":
            break
    assert created is not None and client.responses.retrieve(created.id).status == "in_progress"
    with pytest.raises(openai.NotFoundError):
        sdk(gateway, other).responses.cancel(created.id)
    cancelled = client.responses.cancel(created.id)
    live.close()
    sim.clear_faults()
    assert cancelled.status == "cancelled" and cancelled.background is True
    again = client.responses.cancel(created.id)
    assert again.status == "cancelled"
    time.sleep(1.0)  # the run has stopped: nothing overwrites the cancel
    stored = client.responses.retrieve(created.id)
    assert stored.status == "cancelled"
    assert stored.output and stored.output[0].content[0].text  # the partial output is kept


@contextlib.contextmanager
def replicas(tmp: Path, db: str, name: str, responses: dict | None = None):
    """A simulator, and `start()` for gateways on database `db` (replicas of one deployment), all
    stopped at the end; none may have logged a traceback."""
    init_key_file(tmp / "kms.key")
    sim = Simulator("openai", name)
    cfg = gateway_config(tmp, db, sim)
    if responses is not None:
        cfg["responses"] = responses
    gateways: list[Gateway] = []

    def start() -> Gateway:
        gateways.append(Gateway(cfg, tmp, SECRETS))
        return gateways[-1]

    try:
        yield sim, start
    finally:
        with contextlib.suppress(httpx.HTTPError):
            sim.clear_faults()
        logs = [gw.stop() for gw in gateways]
        sim.stop()
        for log in logs:
            assert "Traceback" not in log, log[-3000:]


def _tenant_and_key(gateway: Gateway, name: str) -> tuple[str, str]:
    key = new_key(gateway, name)
    admin = local_http(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    with admin:
        tenants = admin.get("/admin/v1/tenants").json()["data"]
    return next(t["id"] for t in tenants if t["name"] == name), key


def _accrued(gateway: Gateway) -> Decimal:
    admin = local_http(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    with admin:
        return Decimal(str(admin.get("/admin/v1/contracts/rs-bg/report").json()["accrued"]))


def _billed_calls(gateway: Gateway, tenant: str) -> int:
    admin = local_http(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    with admin:
        summary = admin.get(f"/admin/v1/tenants/{tenant}/usage", params={"group_by": "model_group"}).json()
    return sum(r["calls"] for r in summary["data"] if r["model_group"] == "gpt")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_mid_response_completes_exactly_once_on_another_replica(backend, tmp_path, request):
    """kill -9 while the upstream call is in flight: two replicas started on the same database, one of
    them takes the job over once the lease runs out; a client resumes the stream on either and sees
    every sequence number once; the upstream was called twice (the first call died with the gateway),
    and the turn is billed once."""
    db = request.getfixturevalue("sqlite_database" if backend == "sqlite" else "pg_database")()  # at head already
    with replicas(tmp_path, db, "bg-kill") as (sim, start):
        first = start()
        tenant, key = _tenant_and_key(first, "acme")
        sim.fault(chunk_delay_ms=150, chunks=20)  # about three seconds of streaming
        client = sdk(first, key)
        created = client.responses.create(model="gpt", input="survive a crash", background=True, stream=True)
        events = []
        for event in created:
            events.append(event)
            if event.type == "response.output_text.delta" and event.sequence_number >= 6:
                break
        created.close()
        response_id = events[0].response.id
        assert len(sim.requests()) == 1
        os.kill(first.popen.pid, signal.SIGKILL)  # mid-response: the upstream call is in flight
        first.popen.wait(10)
        both = [start(), start()]
        # Resume on one replica at once: it waits while the dead replica's lease runs out, then follows
        # the run live (on whichever replica claimed it).
        cursor = events[-1].sequence_number
        rest = list(sdk(both[1], key).responses.retrieve(response_id, stream=True, starting_after=cursor))
        assert [e.sequence_number for e in rest] == list(range(cursor + 1, cursor + 1 + len(rest)))
        assert rest[-1].type == "response.completed"
        done = sdk(both[0], key).responses.retrieve(response_id)
        assert done.status == "completed" and "survive a crash" in done.output_text
        assert done.output_text == rest[-1].response.output_text
        time.sleep(3.0)  # longer than a lease: nothing runs it again
        calls = [r for r in sim.requests() if "survive a crash" in r["body"]]
        assert len(calls) == 2  # the call in flight when the gateway died, and the one that finished
        assert calls[0]["request_id"] == calls[1]["request_id"]  # both runs are one turn: one request id
        until(lambda: _billed_calls(both[0], tenant) >= 1, what="usage")
        tokens = done.usage.input_tokens + done.usage.output_tokens
        until(lambda: _accrued(both[0]) > 0, what="the ledger")
        time.sleep(0.5)
        assert _billed_calls(both[0], tenant) == 1  # one usage row for the turn
        assert _accrued(both[0]) == Decimal(tokens) / 2  # and one ledger accrual, for the run that finished


def test_retention_deletes_expired_responses_for_real(tmp_path, sqlite_database):
    db_path = tmp_path / "multihome.db"
    responses = {**FAST, "retention": {"ttl_s": 2.0, "sweep_interval_s": 0.5}}
    with replicas(tmp_path, sqlite_database(db_path.name), "bg-retention", responses) as (sim, start):
        gateway = start()
        client = sdk(gateway, new_key(gateway, "acme"))
        fg = client.responses.create(model="gpt", input="kept for two seconds")
        bg = client.responses.create(model="gpt", input="in the background", background=True, stream=True)
        bg_id = next(iter(bg)).response.id
        bg.close()

        def status(rid: str) -> str | None:
            """The response's status, None once it is gone."""
            try:
                return client.responses.retrieve(rid).status
            except openai.NotFoundError:
                return None

        # Completed, or already swept (a busy machine may take the 2 s TTL to get here).
        until(lambda: status(bg_id) in ("completed", None), what="completed")
        until(lambda: status(fg.id) is None and status(bg_id) is None, what="the sweep")
        engine = sa.create_engine(f"sqlite:///{db_path}")
        with engine.connect() as conn:  # deleted for real: no row, no event, no job of them is left
            assert conn.execute(sa.text("SELECT count(*) FROM responses")).scalar() == 0
            assert conn.execute(sa.text("SELECT count(*) FROM response_events")).scalar() == 0
            assert conn.execute(sa.text("SELECT count(*) FROM jobs WHERE kind = 'response'")).scalar() == 0
        engine.dispose()


def _running(start, text: str) -> tuple[Gateway, str, str, str]:
    """A first replica, a tenant and its key, and a slow background response running on it."""
    first = start()
    tenant, key = _tenant_and_key(first, "acme")
    client = sdk(first, key)
    created = client.responses.create(model="gpt", input=text, background=True)
    until(lambda: client.responses.retrieve(created.id).status == "in_progress", what="in_progress")
    return first, tenant, key, created.id


def test_a_replica_stalled_past_its_lease_cannot_bill_or_finish_the_turn_again(tmp_path, sqlite_database):
    """SIGSTOP a replica mid-response: another takes the job over when the lease runs out and
    finishes it. When the stalled one wakes it finds its lease taken: the call it abandons is not
    billed (the turn's one usage row is the finishing run's) and its writes are refused."""
    db = sqlite_database()  # at the head revision
    with replicas(tmp_path, db, "bg-stall") as (sim, start):
        sim.fault(chunk_delay_ms=100, chunks=20)
        first, tenant, key, response_id = _running(start, "stall and wake")
        os.kill(first.popen.pid, signal.SIGSTOP)
        try:
            second = start()
            other = sdk(second, key)
            done = finished(other, response_id)
            until(lambda: _billed_calls(second, tenant) >= 1, what="usage")
        finally:
            os.kill(first.popen.pid, signal.SIGCONT)
        # The stalled replica wakes, reads on, renews or settles, and finds its lease lost (state/worker.py).
        until(
            lambda: "lease lost to another replica" in (out := first.output()) or "settled elsewhere" in out,
            what="the woken replica to find its lease taken",
        )
        assert done.status == "completed"
        assert other.responses.retrieve(response_id).output_text == done.output_text  # its writes were refused
        calls = [r for r in sim.requests() if "stall and wake" in r["body"]]
        assert len(calls) == 2 and calls[0]["request_id"] == calls[1]["request_id"]
        assert _billed_calls(second, tenant) == 1
        assert _accrued(second) == Decimal(done.usage.input_tokens + done.usage.output_tokens) / 2


def test_a_replica_that_stops_hands_its_response_over_and_the_finished_run_is_billed(tmp_path, sqlite_database):
    """SIGTERM mid-response: the stopping replica hands the job back without recording the call it
    abandons; the replica that finishes it records the turn's one usage row, with the whole answer."""
    db = sqlite_database()  # at the head revision
    with replicas(tmp_path, db, "bg-stop") as (sim, start):
        sim.fault(chunk_delay_ms=100, chunks=20)
        first, tenant, key, response_id = _running(start, "hand me over")
        time.sleep(0.5)  # some output was produced (and metered, were it recorded)
        first.stop()  # a graceful stop: the job is released at once, not after its lease
        sim.clear_faults()
        second = start()
        done = finished(sdk(second, key), response_id)
        assert done.status == "completed" and done.usage.output_tokens > 0
        until(lambda: _billed_calls(second, tenant) >= 1, what="usage")
        time.sleep(0.5)
        assert _billed_calls(second, tenant) == 1
        assert _accrued(second) == Decimal(done.usage.input_tokens + done.usage.output_tokens) / 2
