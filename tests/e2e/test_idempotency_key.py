"""`Idempotency-Key` on `POST /v1/responses` across two replicas on one database (the load balancer
sending a client's retry to another replica): the retry gets the original response, made and billed
once; a 409 while the original runs; a conversation created once, its items added once; a 422 for the key reused with another request; a response not stored
answered again from its key; a replica killed (SIGKILL) between storing the response (or keeping an
unstored one's answer) and marking its key done leaves no second response to a retry. The official openai SDK sends the header through
`extra_headers` (it sends none by itself)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import sqlite3
import subprocess
import threading

import httpx
import openai
import pytest

from .helpers import until
from .test_responses_background import FAST, _billed_calls, _tenant_and_key, replicas, sdk


def _create(gateway, key: str, idem: str, text: str, **extra):
    raw = sdk(gateway, key).responses.with_raw_response.create(
        model="gpt", input=text, extra_headers={"Idempotency-Key": idem}, **extra
    )
    return raw.parse(), raw.headers


def _upstream_calls(sim, text: str) -> int:
    return sum(1 for r in sim.requests() if text in str(r["body"]))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_retry_on_another_replica_gets_the_original_response(backend, tmp_path, request):
    db = request.getfixturevalue("sqlite_database" if backend == "sqlite" else "pg_database")()  # at head already
    with replicas(tmp_path, db, "idem") as (sim, start):
        a, b = start(), start()
        tenant, key = _tenant_and_key(a, "acme")

        first, _ = _create(a, key, "k-1", "only once please")
        again, headers = _create(b, key, "k-1", "only once please")  # the retry, on the other replica
        assert again.id == first.id and again.output_text == first.output_text
        assert headers["idempotent-replayed"] == "true"
        assert _upstream_calls(sim, "only once please") == 1
        until(lambda: _billed_calls(a, tenant) >= 1, what="usage")

        with pytest.raises(openai.UnprocessableEntityError) as err:  # same key, another request
            _create(b, key, "k-1", "something else")
        assert err.value.code == "idempotency_key_reused"

        # Keys are per tenant: another tenant's same key and body make its own response.
        _, other_key = _tenant_and_key(a, "globex")
        theirs, headers = _create(b, other_key, "k-1", "only once please")
        assert theirs.id != first.id and "idempotent-replayed" not in headers
        assert _upstream_calls(sim, "only once please") == 2
        with pytest.raises(openai.BadRequestError):  # over 255 characters: refused before anything runs
            _create(a, key, "k" * 256, "never sent")
        assert _upstream_calls(sim, "never sent") == 0
        # Two keys with different values: a 400, whichever a retry would send first; the same value twice is one key.
        for conv_path, body in (("/v1/responses", {"model": "gpt", "input": "two keys"}), ("/v1/conversations", {})):
            two = [("authorization", f"Bearer {key}"), ("idempotency-key", "k-6"), ("idempotency-key", "k-7")]
            resp = httpx.post(a.url + conv_path, json=body, headers=two, timeout=10)
            assert resp.status_code == 400, resp.text
            assert resp.json()["error"]["code"] == "duplicate_idempotency_key"
            assert resp.json()["error"]["param"] == "idempotency-key"
        assert _upstream_calls(sim, "two keys") == 0
        same = [("authorization", f"Bearer {key}"), ("idempotency-key", "k-6"), ("idempotency-key", "k-6")]
        resp = httpx.post(a.url + "/v1/responses", json={"model": "gpt", "input": "two keys"}, headers=same, timeout=10)
        assert resp.status_code == 200, resp.text

        # While the original runs, a retry elsewhere is told so; afterwards it gets the original.
        sim.fault(latency_ms=3000, times=1)
        out: list = []
        slow = threading.Thread(target=lambda: out.append(_create(a, key, "k-2", "slow and once")[0]))
        slow.start()
        until(lambda: _upstream_calls(sim, "slow and once") == 1, what="the original upstream")
        with pytest.raises(openai.ConflictError) as err:
            _create(b, key, "k-2", "slow and once")
        assert err.value.code == "idempotency_key_in_use"
        slow.join(30)
        assert _create(b, key, "k-2", "slow and once")[0].id == out[0].id
        assert _upstream_calls(sim, "slow and once") == 1

        # Not stored: the answer kept with the key is replayed; nothing made twice.
        unstored, _ = _create(a, key, "k-3", "not kept", store=False)
        again, headers = _create(b, key, "k-3", "not kept", store=False)
        assert (again.id, again.output_text) == (unstored.id, unstored.output_text)
        assert headers["idempotent-replayed"] == "true"
        assert _upstream_calls(sim, "not kept") == 1

        # A background response: the retry answers with its current state, one job, one bill.
        bg, _ = _create(a, key, "k-4", "in the background", background=True)
        done = until(
            lambda: (r := _create(b, key, "k-4", "in the background", background=True)[0]).status == "completed" and r,
            what="completed",
        )
        assert done.id == bg.id and _upstream_calls(sim, "in the background") == 1

        # An upstream failure is not remembered: the retry runs again.
        sim.fault(status=400, times=1)
        with pytest.raises(openai.BadRequestError):
            _create(a, key, "k-5", "fails first")
        assert _create(b, key, "k-5", "fails first")[0].status == "completed"

        # Conversations and their items: created once, whichever replica the retry reaches.
        conv_a = sdk(a, key).conversations.create(extra_headers={"Idempotency-Key": "c-1"})
        conv_b = sdk(b, key).conversations.create(extra_headers={"Idempotency-Key": "c-1"})
        assert conv_a.id == conv_b.id
        item = [{"type": "message", "role": "user", "content": "just once"}]
        added = sdk(a, key).conversations.items.create(conv_a.id, items=item, extra_headers={"Idempotency-Key": "i-1"})
        with pytest.raises(openai.ConflictError) as err:
            sdk(b, key).conversations.items.create(conv_a.id, items=item, extra_headers={"Idempotency-Key": "i-1"})
        assert err.value.code == "idempotency_key_used" and added.data[0].id in err.value.message
        assert len(sdk(b, key).conversations.items.list(conv_a.id).data) == 1

        # Without the header, every create is a new response (and a new bill).
        plain = sdk(a, key)
        assert (
            plain.responses.create(model="gpt", input="twice").id
            != plain.responses.create(model="gpt", input="twice").id
        )
        # k-1 to k-4 and k-6 once each, k-5's refused call and its retry, the two plain ones: nine usage rows.
        until(lambda: _billed_calls(a, tenant) >= 9, what="nine usage rows")
        assert _billed_calls(a, tenant) == 9


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_expired_keys_are_swept_by_the_retention_job(backend, tmp_path, request):
    """Keys past their 24 h are deleted by the periodic sweep (one replica runs it), also when stored
    responses are kept until deleted (`ttl_s: null`); a key still live is kept."""
    if backend == "sqlite":
        db = request.getfixturevalue("sqlite_database")()  # tmp_path / "multihome.db", at the head revision

        def sql(query: str) -> list[str]:
            with contextlib.closing(sqlite3.connect(tmp_path / "multihome.db")) as conn, conn:
                return [str(row[0]) for row in conn.execute(query)]
    else:
        pg = request.getfixturevalue("pg_server")
        db = request.getfixturevalue("pg_database")()

        def sql(query: str) -> list[str]:
            return pg.psql(query, db.rsplit("/", 1)[1]).split()

    responses = {**FAST, "retention": {"ttl_s": None, "sweep_interval_s": 0.5}}
    with replicas(tmp_path, db, "idem-sweep", responses) as (_, start):
        gateway = start()
        _, key = _tenant_and_key(gateway, "acme")
        old, _ = _create(gateway, key, "k-old", "an old request")
        _create(gateway, key, "k-new", "a new request")
        assert set(sql("SELECT key FROM idempotency_keys")) == {"k-old", "k-new"}
        past = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
        sql(f"UPDATE idempotency_keys SET expires_at = '{past}' WHERE key = 'k-old'")  # its 24 hours have passed
        until(lambda: sql("SELECT key FROM idempotency_keys") == ["k-new"], timeout=30, what="the sweep")
        assert sdk(gateway, key).responses.retrieve(old.id).id == old.id  # the response itself is kept


HOLD = 4242  # the advisory lock the test holds: a key's `done` update waits for it (the trigger below)
HOLD_DONE = f"""
CREATE FUNCTION hold_done() RETURNS trigger AS $$ BEGIN
  IF NEW.state = 'done' THEN PERFORM pg_advisory_xact_lock({HOLD}); END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER hold_done BEFORE UPDATE ON idempotency_keys FOR EACH ROW EXECUTE FUNCTION hold_done();
"""


@pytest.mark.parametrize("store", [True, False])
def test_a_replica_killed_before_its_key_is_done_leaves_one_response(store, tmp_path, pg_server):
    """The kill point, placed without a hook in the gateway: a trigger makes the write that marks a key done
    wait for an advisory lock the test holds; the gateway is killed (SIGKILL) while it waits. Stored and
    marked in two transactions, the response is committed by then and the key left pending: the retry, once
    the key's hold has lapsed, made a second response. Marked in the response's transaction, neither is.
    Not stored (`store: false`), the key was marked after the answer: the client had an answer the key did
    not hold, and the retry was a second call and bill with another answer. Its answer kept with the key's
    mark, the client has no answer until the mark is committed."""
    db = pg_server.migrated_database()
    name = db.rsplit("/", 1)[1]

    def sql(query: str) -> list[str]:
        return pg_server.psql(query, name).split()

    with replicas(tmp_path, db, "idem-kill") as (sim, start):
        first = start()
        tenant, key = _tenant_and_key(first, "acme")
        sql(HOLD_DONE)
        holder = subprocess.Popen(  # a session holding the lock (psql reads its commands from stdin)
            [*pg_server._as_user, str(pg_server.bindir / "psql"), "-h", pg_server.host, "-p", str(pg_server.port)]
            + ["-U", pg_server.user, "-d", name, "-AtXq"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdin is not None and holder.stdout is not None
            holder.stdin.write(f"SELECT pg_advisory_lock({HOLD}), 'held';\n")
            holder.stdin.flush()
            assert holder.stdout.readline().strip() == "|held"
            answers: list = []

            def create() -> None:
                try:
                    answers.append(_create(first, key, "k-kill", "made once across a kill", store=store)[0])
                except openai.APIError as exc:  # killed before it answered
                    answers.append(exc)

            thread = threading.Thread(target=create)
            thread.start()
            waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            until(lambda: sql(waiting) == ["1"], what="the key's done write to wait for the lock")
            os.kill(first.popen.pid, signal.SIGKILL)
            first.popen.wait(30)
            thread.join(60)
        finally:
            if holder.stdin is not None:
                holder.stdin.close()
            holder.wait(30)
        sql("DROP TRIGGER hold_done ON idempotency_keys")
        sql("UPDATE idempotency_keys SET locked_until = now() - interval '1 second'")  # its 15 minutes passed

        second = start()
        retried, _ = _create(second, key, "k-kill", "made once across a kill", store=store)
        made = sql(f"SELECT id FROM responses WHERE tenant_id = '{tenant}'")
        assert made == ([retried.id] if store else []), (made, answers)  # one key, one response
        if store and isinstance(answers[0], openai.types.responses.Response):  # answered before the kill: the same
            assert answers[0].id == retried.id
        if not store:  # no answer went out that its key does not hold
            assert isinstance(answers[0], openai.APIError), answers
        replayed, headers = _create(second, key, "k-kill", "made once across a kill", store=store)
        assert replayed.id == retried.id and headers["idempotent-replayed"] == "true"
        assert _upstream_calls(sim, "made once across a kill") >= 1
