"""Memory embedded by a routed deployment (`memory.embeddings.model`, docs/memory.md "Embeddings"), end to
end: the real gateway (SQLite, then PostgreSQL; local KMS; managed keys) in front of two OpenAI
simulators standing for two clouds, X (data zone eu) and Y (us), both serving `text-embedding-3-small`,
driven with the official openai SDK.

Memory writes and searches are embedded by the group `embed` (Y first): the simulators' request logs
show the records' texts and the query, a write's batch in one upstream request; the usage rows say
`memory_embeddings` and bill the memory's tenant. A tenant whose memory embeddings are pinned to X has
them embedded there only, and refused with `stateful_pin_unavailable` naming the pin when X is down,
while its plain embeddings calls still go to Y. An outage during a write is a 503 in OpenAI's format and
nothing is written. A namespace's vectors stay of one model: the namespace says which."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa

from builders import audit, breakers, config, database, deployment, embedding, group, identity, price, simulated
from multihome.crypto import init_key_file
from multihome.storage.engine import create_engine

from .helpers import tenant_with_key, until
from .processes import Gateway, Simulator
from .stores import head_database
from .test_memory import get, post

ADMIN_KEY = "mh-memory-routed-admin"
SECRETS = {"MH_MR_ADMIN_KEY": ADMIN_KEY}
MODEL = "text-embedding-3-small"
DIMS = 256
FACTS = ["My dog is a beagle called Biscuit.", "I am allergic to peanuts.", "My sister Ana lives in Lisbon."]


class World:
    def __init__(self, db: str, gateway: Gateway, sims: dict[str, Simulator], audit_dir: Path) -> None:
        self.db, self.gateway, self.sims, self.audit_dir = db, gateway, sims, audit_dir
        self.admin = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
        self.tenants: dict[str, str] = {}
        self.keys: dict[str, str] = {}
        for name in ("acme", "globex", "pinned"):
            self.tenants[name], self.keys[name] = tenant_with_key(self.admin, name)
        resp = self.admin.post(
            f"/admin/v1/tenants/{self.tenants['pinned']}/stateful-pins",
            json={"providers": ["x"], "work": ["memory_embedding"], "note": "contract c-7: X hosts the memory"},
        )
        assert resp.status_code == 201, resp.text
        self.pin = resp.json()

    def sdk(self, who: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=self.keys[who], max_retries=0, timeout=30)

    def embeddings_sent(self, sim: str) -> list[Any]:
        """The `input` of every embeddings request the simulator received, in order."""
        return [json.loads(r["body"])["input"] for r in self.sims[sim].requests() if r["path"].endswith("/embeddings")]

    def audited(self, kind: str) -> list[dict]:
        """The bodies of the audit trail's events of `kind`."""
        events = [
            json.loads(line)
            for path in self.audit_dir.glob("chn_*.jsonl")
            if not path.name.endswith(".checkpoints.jsonl")
            for line in path.read_text().splitlines()
        ]
        return [e["body"] for e in events if e["kind"] == kind]

    def reset(self) -> None:
        for sim in self.sims.values():
            sim.clear_faults()
            sim.reset()

    def usage(self, tenant: str) -> list[Any]:
        async def read() -> list[Any]:
            engine = create_engine(self.db)
            try:
                async with engine.connect() as conn:
                    rows = await conn.execute(
                        sa.text(
                            "SELECT request_id, endpoint, model_group, deployment, prompt_tokens, outcome "
                            "FROM usage_calls WHERE tenant_id = :t ORDER BY started_at"
                        ),
                        {"t": tenant},
                    )
                    return list(rows.all())
            finally:
                await engine.dispose()

        return asyncio.run(read())


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    tmp: Path = tmp_path_factory.mktemp(f"memory-routed-{request.param}")
    db = head_database(request, request.param, tmp)
    init_key_file(tmp / "kms.key")
    sims = {"x": Simulator("openai", "mem-x"), "y": Simulator("openai", "mem-y")}
    gateway = None
    try:
        cfg = config(
            storage=database(db),
            kms={"local": {"key_file": str(tmp / "kms.key")}},
            identity=identity("MH_MR_ADMIN_KEY"),
            audit=audit(tmp / "audit"),
            routing=breakers(0),
            providers={
                "x": simulated("openai", sims["x"].url, data_zone="eu"),
                "y": simulated("openai", sims["y"].url, data_zone="us"),
            },
            deployments={
                "ex": embedding("x", MODEL),
                "ey": embedding("y", MODEL, price=price(1_000_000, 0)),  # $1 a token: a run's spend cap test
                "cy": deployment("y", "gpt-y"),
            },
            model_groups={"embed": group("ey", "ex", retries=0), "gpt": group("cy")},  # Y first
            memory={"embeddings": {"model": "embed", "dimensions": DIMS, "matryoshka": True}},
        )
        gateway = Gateway(cfg, tmp, SECRETS)
        w = World(db, gateway, sims, tmp / "audit")
        yield w
        w.admin.close()
    finally:
        log = gateway.stop() if gateway is not None else ""
        for sim in sims.values():
            sim.stop()
        assert "Traceback" not in log, log[-3000:]


def test_writes_and_searches_are_embedded_by_the_routed_deployment_and_billed_to_the_tenant(world):
    world.reset()
    client = world.sdk("acme")
    ns = {"agent_id": "concierge", "user_id": "u-1"}
    raw = client.post("/memory/records", cast_to=httpx.Response, body={**ns, "records": [{"text": t} for t in FACTS]})
    write_id = raw.headers["x-request-id"]
    assert len(raw.json()["data"]) == len(FACTS)
    assert world.embeddings_sent("y") == [FACTS]  # the whole batch in one upstream request, on the primary
    assert world.embeddings_sent("x") == []

    hits = post(client, "/memory/search", {**ns, "query": FACTS[1], "mode": "vector", "top_k": 3})["data"]
    assert hits[0]["text"] == FACTS[1] and hits[0]["similarity"] > 0.99  # the same model embedded both
    hits = post(client, "/memory/search", {**ns, "query": "what is the beagle called?"})["data"]
    assert hits[0]["text"] == FACTS[0]  # hybrid: the keywords find it (the simulator's vectors mean nothing)
    assert world.embeddings_sent("y")[1:] == [[FACTS[1]], ["what is the beagle called?"]]

    spaces = get(client, "/memory/namespaces", agent_id="concierge")["data"]
    assert [(s["embedding_model"], s["embedding_dimensions"]) for s in spaces] == [(MODEL, DIMS)]

    rows = until(lambda: (r := world.usage(world.tenants["acme"])) and len(r) >= 3 and r, what="usage rows")
    assert [(r.endpoint, r.model_group, r.deployment, r.outcome) for r in rows] == [
        ("memory_embeddings", "embed", "ey", "ok")
    ] * 3
    assert rows[0].request_id == f"{write_id}-emb" and all(r.prompt_tokens > 0 for r in rows)
    assert world.usage(world.tenants["globex"]) == []  # nobody else pays for it

    # The embedding calls are on the audit trail like any call, as the memory's tenant's.
    calls = until(lambda: [c for c in world.audited("call") if c["request_id"] == f"{write_id}-emb"], what="audit")
    assert (calls[0]["endpoint"], calls[0]["tenant"], calls[0]["deployment"]) == (
        "memory_embeddings",
        world.tenants["acme"],
        "ey",
    )


def test_a_write_past_the_batch_limit_is_cut_and_every_batch_is_in_the_namespaces_model(world):
    world.reset()
    client = world.sdk("acme")
    ns = {"agent_id": "bulk", "user_id": "u-6"}
    texts = [f"Fact number {i} about the bulk namespace." for i in range(100)]
    raw = client.post("/memory/records", cast_to=httpx.Response, body={**ns, "records": [{"text": t} for t in texts]})
    assert raw.status_code == 200 and len(raw.json()["data"]) == 100
    sent = world.embeddings_sent("y")
    assert sorted(len(s) for s in sent) == [4, 96] and sorted(t for s in sent for t in s) == sorted(texts)
    hits = post(client, "/memory/search", {**ns, "query": texts[99], "mode": "vector", "top_k": 1})["data"]
    assert hits[0]["text"] == texts[99] and hits[0]["similarity"] > 0.99  # the second batch, comparable
    ids = {f"{raw.headers['x-request-id']}-emb1", f"{raw.headers['x-request-id']}-emb2"}
    until(lambda: ids <= {r.request_id for r in world.usage(world.tenants["acme"])}, what="a usage row per batch")


def test_another_tenant_cannot_search_or_read_the_memory(world):
    world.reset()
    acme, globex = world.sdk("acme"), world.sdk("globex")
    ns = {"agent_id": "iso", "user_id": "u-2"}
    rec = post(acme, "/memory/records", {**ns, "text": "The vault code is 7781."})
    assert post(globex, "/memory/search", {**ns, "query": "vault code"})["data"] == []
    with pytest.raises(openai.NotFoundError):
        get(globex, f"/memory/records/{rec['id']}")
    assert get(globex, "/memory/namespaces")["data"] == []
    # Globex's own namespace of the same name is its own, embedded as its own calls.
    post(globex, "/memory/records", {**ns, "text": "Globex keeps its own notes."})
    hits = post(acme, "/memory/search", {**ns, "query": "Globex notes", "mode": "keyword"})["data"]
    assert [h["text"] for h in hits] == []
    rows = until(lambda: world.usage(world.tenants["globex"]), what="globex usage")
    assert {r.endpoint for r in rows} == {"memory_embeddings"}


def test_a_pinned_tenant_embeds_only_inside_its_pin_and_is_refused_naming_it_when_the_pin_is_down(world):
    world.reset()
    client = world.sdk("pinned")
    ns = {"agent_id": "pinned-agent", "user_id": "u-3"}
    post(client, "/memory/records", {**ns, "records": [{"text": t} for t in FACTS]})
    post(client, "/memory/search", {**ns, "query": "dog"})
    assert world.embeddings_sent("x") == [FACTS, ["dog"]]  # X, though the group prefers Y
    assert world.embeddings_sent("y") == []

    world.sims["x"].fault(status=503)  # the pinned cloud is down
    with pytest.raises(openai.APIStatusError) as refused:
        post(client, "/memory/records", {**ns, "text": "Written while X is down."})
    err = refused.value.response.json()["error"]
    assert refused.value.status_code == 503 and err["code"] == "stateful_pin_unavailable"
    assert world.pin["id"] in err["message"] and "records were not written" in err["message"]
    assert world.embeddings_sent("y") == []  # it did not fail over outside the pin
    with pytest.raises(openai.APIStatusError) as refused:
        post(client, "/memory/search", {**ns, "query": "dog"})
    assert refused.value.response.json()["error"]["code"] == "stateful_pin_unavailable"
    assert get(client, "/memory/namespaces", agent_id="pinned-agent")["data"][0]["records"] == len(FACTS)

    # The same tenant's plain embeddings are stateless: they fail over to Y.
    plain = client.embeddings.create(model="embed", input="stateless")
    assert len(plain.data[0].embedding) > 0 and world.embeddings_sent("y") == ["stateless"]
    # Route explain shows the pin's work.
    explained = httpx.post(
        world.gateway.url + "/v1/route/explain",
        params={"work": "memory_embedding"},
        json={"model": "embed", "input": "x"},
        headers={"authorization": f"Bearer {world.keys['pinned']}"},
        timeout=10,
    ).json()
    assert list(explained["stateful_pin"]["removed"]) == ["ey"]


def test_an_outage_during_a_write_is_a_503_and_nothing_is_written(world):
    world.reset()
    client = world.sdk("acme")
    ns = {"agent_id": "outage", "user_id": "u-4"}
    post(client, "/memory/records", {**ns, "text": "Before the outage."})
    world.sims["x"].fault(status=503)
    world.sims["y"].fault(status=503)
    with pytest.raises(openai.InternalServerError) as failed:
        post(client, "/memory/records", {**ns, "records": [{"text": "Lost?"}, {"text": "Also lost?"}]})
    err = failed.value.response.json()["error"]
    assert failed.value.status_code == 503 and "records were not written" in err["message"]
    assert "ey" in err["message"] and "ex" in err["message"]  # the deployments tried
    world.reset()
    page = get(client, "/memory/records", **ns)
    assert [r["text"] for r in page["data"]] == ["Before the outage."]  # nothing half-written
    # Y is back: the write goes through, and the failed attempt was not billed as served.
    post(client, "/memory/records", {**ns, "text": "After the outage."})
    assert [r["text"] for r in get(client, "/memory/records", **ns)["data"]] == [
        "After the outage.",
        "Before the outage.",
    ]


def script(*calls: tuple[str, Any]) -> str:
    """The user's message: one `call` line per tool call the simulated model makes, in order."""
    return "\n".join(f"call {name} {json.dumps(args)}" for name, args in calls)


def test_the_memory_tools_of_a_run_embed_as_the_run_and_a_pin_refusal_reaches_the_model(world):
    world.reset()
    memory = {"type": "memory", "agent_id": "runs", "user_id": "u-5"}
    fact = "The user flies out of Porto on Fridays."
    text = script(("memory_write", {"text": fact}), ("memory_search", {"query": "Porto Fridays"}))
    resp = world.sdk("acme").responses.create(model="gpt", input=text, tools=[memory])
    assert resp.status == "completed", resp
    wrote, searched = resp.output[0], resp.output[1]
    assert wrote.status == "completed" and json.loads(searched.output)["results"][0]["text"] == fact
    assert world.embeddings_sent("y") == [[fact], ["Porto Fridays"]]
    rows = until(
        lambda: (
            [
                r
                for r in world.usage(world.tenants["acme"])
                if r.endpoint == "memory_embeddings" and "-m" in r.request_id
            ]
            or None
        ),
        what="the run's embedding usage",
    )
    assert {r.deployment for r in rows} == {"ey"}

    # The pinned tenant's run, with X down: the model reads why its write failed, and the run goes on.
    world.sims["x"].fault(status=503)
    resp = world.sdk("pinned").responses.create(
        model="gpt", input=script(("memory_write", {"text": fact})), tools=[memory]
    )
    assert resp.status == "completed", resp
    failed = resp.output[0]
    assert failed.type == "mcp_call" and failed.status == "failed"
    assert world.pin["id"] in failed.model_dump()["error"]["content"][0]["text"]
    assert world.embeddings_sent("y") == [[fact], ["Porto Fridays"]]  # nothing more on Y
    world.reset()


def test_a_run_s_memory_embeddings_count_toward_its_max_spend(world):
    # The model steps cost nothing (gpt-y has no price); the memory write's routed embedding, billed to the
    # caller at $1 a token, passes the run's $1 cap: the run stops before its next model step.
    world.reset()
    memory = {"type": "memory", "agent_id": "spend", "user_id": "u-6"}
    fact = "The user takes the night train to Vienna."
    text = script(("memory_write", {"text": fact}), ("memory_search", {"query": "Vienna"}))
    resp = world.sdk("acme").responses.create(
        model="gpt", input=text, tools=[memory], extra_body={"multihome": {"agent": {"max_spend": 1}}}
    )
    assert resp.status == "incomplete", resp
    assert resp.incomplete_details is not None and resp.incomplete_details.model_dump()["multihome"] == {
        "limit": "max_spend"
    }
    assert [(i.type, getattr(i, "name", None), getattr(i, "status", None)) for i in resp.output] == [
        ("mcp_call", "memory_write", "completed")
    ]
    assert world.embeddings_sent("y") == [[fact]]  # the search's embedding was never made
