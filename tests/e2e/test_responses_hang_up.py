"""A client that hangs up on `POST /v1/responses` before its answer began (the openai SDK closes the
connection when its timeout passes, then sends the call again) ends a foreground turn's upstream call, as
a chat call's: each abandoned attempt ran upstream to its end and was billed. What is stored stays whole:
an abandoned turn is not stored, not appended to its conversation, and the chain it continued goes on;
each attempt is recorded `cancelled` (499) in the usage and the audit trail. A background response runs
on without its client (docs/responses.md, "A client that hangs up"). Upstream calls are counted at the
simulator."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from builders import api_keys, audit, breakers, config, database, deployment, groups, identity, price, simulated

from .helpers import until
from .processes import Gateway

SECRETS = {"MH_HU_CLIENT": "mh-hang-up-client", "MH_HU_ADMIN": "mh-hang-up-admin"}
SLOW = 30_000  # ms: far past the SDK's timeout of 1 s


class Sent:
    """The requests the SDK sent (its retries included), by an httpx event hook."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, request) -> None:
        self.count += 1


class World:
    def __init__(self, gateway: Gateway, sim, db: Path) -> None:
        self.gateway, self.sim, self.db = gateway, sim, db
        self.admin = httpx.Client(
            base_url=gateway.url, headers={"authorization": f"Bearer {SECRETS['MH_HU_ADMIN']}"}, timeout=10
        )

    def sdk(self, sent: Sent | None = None, **options) -> openai.OpenAI:
        http = openai.DefaultHttpxClient(event_hooks={"request": [sent]} if sent is not None else {})
        return openai.OpenAI(
            base_url=self.gateway.url + "/v1", api_key=SECRETS["MH_HU_CLIENT"], http_client=http, **options
        )

    def rows(self, sql: str) -> list[tuple]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute(sql).fetchall()

    def given_up(self, **create) -> None:
        """The SDK's call with a timeout of 1 s and its two retries, against a deployment slower than that."""
        sent = Sent()
        self.sim.fault(latency_ms=SLOW, match="gpt-r")
        try:
            with pytest.raises(openai.APITimeoutError):
                self.sdk(sent, timeout=1, max_retries=2).responses.create(model="gpt", input="slow one", **create)
            assert sent.count == 3
            until(lambda: self.sim.stats()["cancelled"] == 3, what="the three abandoned upstream calls to be cancelled")
            assert self.sim.stats()["completed"] == 0
        finally:
            self.sim.clear_faults()

    def recorded_cancelled(self) -> None:
        """Each attempt's usage row and audit event: cancelled (499), on the responses endpoint."""
        until(
            lambda: (
                len(self.rows("SELECT 1 FROM usage_calls WHERE endpoint = 'responses' AND outcome = 'cancelled'")) == 3
            ),
            what="three cancelled usage rows",
        )
        assert self.rows("SELECT DISTINCT status FROM usage_calls WHERE outcome = 'cancelled'") == [(499,)]
        # Each upstream was sent the request, and bills its prompt at least: the prompt's estimate is charged, at
        # the deployment's prices, on a row of its own beside the call's (docs/metering.md).
        billed = until(
            lambda: (
                (
                    rows := self.rows(
                        "SELECT status, prompt_tokens, completion_tokens, estimated, cost_nanos FROM usage_calls "
                        "WHERE outcome = 'unserved'"
                    )
                )
                and len(rows) == 3
                and rows
            ),
            what="the three abandoned requests' prompts charged",
        )
        assert all(
            status == 499 and prompt > 0 and completion == 0 and estimated
            for status, prompt, completion, estimated, _ in billed
        )
        assert all(cost == prompt * 1000 * 1000 for _, prompt, _, _, cost in billed)  # 1,000 per million tokens

        def cancelled_events() -> list:
            data = self.admin.get("/admin/v1/audit/events", params={"outcome": "cancelled"}).json()["data"]
            return data if len(data) == 3 else []

        events = until(cancelled_events, what="three cancelled calls in the audit trail")
        assert {e.get("body", e)["endpoint"] for e in events} == {"responses"}

        # Six rows, rightly: one per request id the gateway saw (the SDK's three tries) and one per request an
        # upstream was sent. The usage summary counts the first as calls, the second as unserved answers.
        [(own,)] = self.rows("SELECT count(*) FROM usage_calls WHERE request_id NOT LIKE '%.%'")
        [(total,)] = self.rows("SELECT count(*) FROM usage_calls")
        assert total == own + 3
        [entry] = self.admin.get("/admin/v1/usage", params={"group_by": "tenant"}).json()["data"]
        assert (entry["calls"], entry["unserved"]) == (own, 3)
        assert entry["errors"] == 3  # the three cancelled calls; an unserved answer is not one more error


@pytest.fixture(params=["native", "translated"])
def world(request, simulator, tmp_path: Path, sqlite_database) -> Iterator[World]:
    """The deployment takes the Responses API natively, or the turn is translated to a chat completion."""
    sim = simulator("openai", "hang-up")
    db = sqlite_database()  # at the head revision
    cfg = config(
        server=api_keys("MH_HU_CLIENT"),
        identity=identity("MH_HU_ADMIN"),
        storage=database(db),
        kms={"local": {"key_file": str(tmp_path / "kms.key")}},
        audit=audit(tmp_path / "audit"),
        routing=breakers(0),
        providers={"oa": simulated("openai", sim.url)},
        deployments={"oa": deployment("oa", "gpt-r", responses_api=request.param, price=price(1000, 2000))},
        model_groups=groups({"gpt": "oa"}, retries=0),
    )
    gw = Gateway(cfg, tmp_path, SECRETS)
    try:
        yield World(gw, sim, Path(db.split("///", 1)[1]))
    finally:
        log = gw.stop()
        assert "Traceback" not in log, log[-3000:]


def test_a_conversation_turn_the_sdk_gave_up_on_is_cancelled_upstream_and_not_appended(world):
    client = world.sdk(max_retries=0, timeout=20)
    conv = client.conversations.create()
    world.given_up(conversation=conv.id)
    world.recorded_cancelled()
    assert client.conversations.items.list(conv.id).data == []  # no turn, and no half of one
    assert world.rows("SELECT count(*) FROM responses") == [(0,)]

    done = client.responses.create(model="gpt", input="fast one", conversation=conv.id)
    assert done.status == "completed"
    items = client.conversations.items.list(conv.id, order="asc").data
    assert [i.type for i in items] == ["message", "message"]  # the turn that was answered, once
    assert items[0].content[0].text == "fast one"


def test_a_streamed_continuation_the_sdk_gave_up_on_leaves_its_chain_to_go_on(world):
    client = world.sdk(max_retries=0, timeout=20)
    first = client.responses.create(model="gpt", input="first turn")
    world.sim.reset()
    world.given_up(previous_response_id=first.id, stream=True)
    world.recorded_cancelled()
    assert world.rows("SELECT id FROM responses") == [(first.id,)]  # the abandoned turns were not stored

    with client.responses.stream(model="gpt", input="next turn", previous_response_id=first.id) as stream:
        done = stream.get_final_response()
    assert done.status == "completed"
    sent = json.loads(world.sim.requests()[-1]["body"])  # the chain as it was: first turn, then this
    if "input" in sent:
        texts = [part["text"] for item in sent["input"] for part in item["content"]]
    else:
        texts = [m["content"] for m in sent["messages"]]
    assert texts[0] == "first turn" and texts[-1] == "next turn" and "slow one" not in texts
    assert client.responses.retrieve(done.id).previous_response_id == first.id


def test_a_background_response_runs_on_after_its_client_hung_up(world):
    world.sim.fault(latency_ms=2_000, match="gpt-r")
    client = world.sdk(max_retries=0, timeout=20)
    stream = client.responses.create(model="gpt", input="in the background", background=True, stream=True)
    first = next(iter(stream))
    stream.close()  # the client hangs up before the answer's first delta
    response_id = first.response.id
    done = until(
        lambda: (r := client.responses.retrieve(response_id)).status == "completed" and r,
        what="the background response to complete without its client",
    )
    assert done.output_text
    assert world.sim.stats()["completed"] == 1 and world.sim.stats()["cancelled"] == 0
