"""Two replicas configured with different memory embedding spaces (one asks the model for 256 dimensions,
the other for 512: a config rolled out to half the fleet) write the first records of the same new
namespaces at the same time, through the official openai SDK, on one PostgreSQL database.

The namespace's space is recorded by its first write only (docs/memory.md "One namespace, one model"):
every write is either stored in that space or refused with 409 `memory_embedding_model_unavailable`,
never a 500, never vectors of two sizes in one namespace; every stored record is found by a search."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from builders import config, database, embedding, group, identity, simulated
from multihome.crypto import init_key_file

from .helpers import tenant_with_key
from .processes import Gateway, Simulator, started_together
from .test_memory import get, post

ADMIN_KEY = "mh-memory-race-admin"
MODEL = "text-embedding-3-small"
NAMESPACES = 4
WRITES = 6  # per namespace and replica


@pytest.fixture(scope="module")
def fleet(pg_server, tmp_path_factory):
    tmp: Path = tmp_path_factory.mktemp("memory-race")
    db = pg_server.migrated_database()  # at the head revision: the replicas start together
    init_key_file(tmp / "kms.key")
    sim = Simulator("openai", "mem-race")
    gateways: list[Gateway] = []
    try:
        for dims in (256, 512):
            cfg = config(
                storage=database(db),
                kms={"local": {"key_file": str(tmp / "kms.key")}},
                identity=identity("MH_RACE_ADMIN"),
                providers={"p": simulated("openai", sim.url)},
                deployments={"e": embedding("p", MODEL)},
                model_groups={"embed": group("e", retries=0)},
                memory={"embeddings": {"model": "embed", "dimensions": dims, "matryoshka": True}},
            )
            gateways.append(Gateway(cfg, tmp, {"MH_RACE_ADMIN": ADMIN_KEY}, wait=False))
        started_together(*gateways)
        admin = httpx.Client(base_url=gateways[0].url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
        _, key = tenant_with_key(admin, "racer")
        yield [openai.OpenAI(base_url=g.url + "/v1", api_key=key, max_retries=0, timeout=60) for g in gateways]
    finally:
        logs = [g.stop() for g in gateways]
        sim.stop()
        for log in logs:
            assert "Traceback" not in log, log[-3000:]


def test_first_writes_from_two_spaces_at_once_leave_one_space_per_namespace(fleet):
    def write(job: tuple[int, int, int]) -> tuple[int, int, Any]:
        ns, replica, n = job
        body = {"agent_id": "race", "user_id": f"u{ns}", "text": f"fact {n} of namespace {ns} from replica {replica}"}
        try:
            return ns, replica, post(fleet[replica], "/memory/records", body)
        except openai.APIStatusError as err:
            return ns, replica, err

    jobs = [(ns, n % 2, n) for ns in range(NAMESPACES) for n in range(2 * WRITES)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(write, jobs))
    for _, _, outcome in results:
        if isinstance(outcome, openai.APIStatusError):
            assert outcome.status_code == 409, outcome
            assert outcome.code == "memory_embedding_model_unavailable", outcome.body
    spaces = {
        int(n["user_id"][1:]): n["embedding_dimensions"]
        for n in get(fleet[0], "/memory/namespaces", agent_id="race")["data"]
    }
    assert sorted(spaces) == list(range(NAMESPACES))
    for ns in range(NAMESPACES):
        stored = [r for i, rep, r in results if i == ns and not isinstance(r, openai.APIStatusError)]
        # Only the replica of the namespace's space stored anything in it.
        assert {rep for i, rep, r in results if i == ns and not isinstance(r, openai.APIStatusError)} == {
            0 if spaces[ns] == 256 else 1
        }
        listed = get(fleet[0], "/memory/records", agent_id="race", user_id=f"u{ns}", limit=100)["data"]
        assert {r["id"] for r in listed} == {r["id"] for r in stored}
        owner = fleet[0 if spaces[ns] == 256 else 1]
        hits = post(owner, "/memory/search", {"agent_id": "race", "user_id": f"u{ns}", "query": "fact", "top_k": 100})
        assert {h["id"] for h in hits["data"]} == {r["id"] for r in stored}
