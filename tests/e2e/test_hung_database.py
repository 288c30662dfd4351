"""A PostgreSQL server that stops answering (its processes stopped: connections stay open and nothing comes
back, as on a hung server or a network path dropping packets), against the real `multihome` process with
the official openai SDK as client. docs/storage.md "Outages": a statement the server does not answer within
30 s (a connection within 10 s) is the database unreachable, so stored state and the admin API answer 503
`storage_unavailable` instead of holding their callers for as long as the server hangs; calls go on being
served; once the server answers again the gateway writes again, without a restart."""

from __future__ import annotations

import httpx
import openai
import pytest

from builders import audit, config, database, deployment, groups, identity, simulated
from multihome.crypto import init_key_file
from pg import PostgresServer

from .helpers import tenant_with_key, until
from .processes import Gateway, Simulator

ADMIN_KEY = "mh-hung-database-admin"
ENV = {"MH_HD_ADMIN": ADMIN_KEY}
# Longer than the bounds (a pooled connection's ping and its statement: 30 s, a new connection: 10 s) together:
# a hang past it is the hang this file is about.
CLIENT_TIMEOUT_S = 120


@pytest.fixture
def server():
    """A cluster of this test's own: the others' stays answering."""
    pg = PostgresServer()
    try:
        yield pg
    finally:
        pg.stop()  # continues its processes first


def test_a_hung_database_is_a_503_within_its_timeouts_and_the_gateway_writes_again_when_it_answers(server, tmp_path):
    sim = Simulator("openai", "sim")
    gateway = None
    init_key_file(tmp_path / "kms.key")
    try:
        cfg = config(
            storage=database(server.migrated_database()),
            kms={"local": {"key_file": str(tmp_path / "kms.key")}},
            identity=identity("MH_HD_ADMIN"),
            audit=audit(tmp_path / "audit"),
            providers={"oa": simulated("openai", sim.url)},
            deployments={"quick": deployment("oa", "m-quick")},
            model_groups=groups({"quick": "quick"}, retries=0),
        )
        gateway = Gateway(cfg, tmp_path, ENV)
        admin = httpx.Client(
            base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=CLIENT_TIMEOUT_S
        )
        _, key = tenant_with_key(admin, "acme")
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=CLIENT_TIMEOUT_S)
        kept = client.responses.create(model="quick", input="keep me", store=True)

        server.hang(True)
        try:
            # Served from memory: the keys' snapshot, the usage rows queued for later.
            assert client.chat.completions.create(model="quick", messages=[{"role": "user", "content": "hi"}])
            with pytest.raises(openai.APIStatusError) as refused:
                client.responses.create(model="quick", input="store me", store=True)
            assert (refused.value.status_code, refused.value.code) == (503, "storage_unavailable")
            assert refused.value.response.headers.get("retry-after")
            listed = admin.get("/admin/v1/tenants")
            assert listed.status_code == 503 and listed.json()["error"]["code"] == "storage_unavailable", listed.text
        finally:
            server.hang(False)

        def stored() -> bool:
            try:
                return client.responses.create(model="quick", input="again", store=True).status == "completed"
            except openai.APIStatusError as exc:  # its pooled connections are replaced first
                assert exc.status_code == 503, exc
                return False

        until(stored, timeout=90, what="stored responses once the server answers")
        assert client.responses.retrieve(kept.id).output_text == kept.output_text
    finally:
        log = gateway.stop() if gateway is not None else ""
        sim.stop()
    assert "Traceback" not in log, log[-4000:]
