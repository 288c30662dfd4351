"""What docs/audit.md says each event of a real gateway's trail holds and never holds, through the
official openai SDK: a served call has a `call_started` and a `call` whose `request_sha256` is the
SHA-256 of the bytes the client sent and `response_sha256` of the bytes it received; a budget refusal is a
`policy_denial`; no event holds the prompt, the answer or the client's key (only its visible id); and
the trail a clean stop leaves verifies with the CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys

import openai
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from builders import api_keys, audit, config, deployment, groups, key_budget, price, simulated, sqlite
from multihome.audit.keys import public_pem

from .processes import Gateway, Simulator

SECRETS = {"MH_AE_CLIENT": "mh-audit-events-client-key", "MH_AE_SPENT": "mh-audit-events-spent-key"}
PROMPT = "AUDIT-CANARY-PROMPT the quick brown fox asks about its secret plans"


def test_a_real_trail_holds_hashes_and_ids_never_content_or_keys(tmp_path):
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pub = tmp_path / "audit.pub.pem"
    pub.write_bytes(public_pem(key))
    audit_dir = tmp_path / "audit"
    env = {**SECRETS, "MH_AE_AUDIT_KEY": base64.b64encode(seed).decode()}
    sim = Simulator("openai", "audit-events")
    sent: list[bytes] = []
    gw = None
    try:
        gw = Gateway(
            config(
                server=api_keys(*SECRETS),
                storage=sqlite(tmp_path / "mh.db"),
                audit=audit(audit_dir, signing_key_env="MH_AE_AUDIT_KEY"),
                metering={"budgets": [key_budget("MH_AE_SPENT", "0.0000001", period="total")]},
                providers={"oa": simulated("openai", sim.url)},
                deployments={"oa": deployment("oa", "gpt-a", price=price(1000, 2000))},
                model_groups=groups({"gpt": "oa"}, retries=0),
            ),
            tmp_path,
            env,
        )
        http = openai.DefaultHttpxClient(event_hooks={"request": [lambda r: sent.append(r.read())]})
        client = openai.OpenAI(
            base_url=gw.url + "/v1", api_key=SECRETS["MH_AE_CLIENT"], max_retries=0, timeout=20, http_client=http
        )
        messages = [{"role": "user", "content": PROMPT}]
        raw = client.chat.completions.with_raw_response.create(model="gpt", messages=messages)
        served_id, request_bytes, answer_bytes = raw.headers["x-request-id"], sent[-1], raw.http_response.content
        answer = raw.parse().choices[0].message.content
        assert answer and len(answer) >= 8
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="gpt", messages=messages, stream=True)
            if c.choices
        )
        spent = client.with_options(api_key=SECRETS["MH_AE_SPENT"])
        try:
            spent.chat.completions.create(model="gpt", messages=messages)
            raise AssertionError("the used-up budget did not refuse the call")
        except openai.RateLimitError as exc:
            denied_id = exc.response.headers["x-request-id"]
    finally:
        log = gw.stop() if gw is not None else ""
        sim.stop()
    assert "Traceback" not in log, log[-3000:]

    files = sorted(p for p in audit_dir.iterdir() if p.is_file())
    trail = b"".join(p.read_bytes() for p in files).decode()
    for never in (PROMPT, "AUDIT-CANARY", answer, streamed, *SECRETS.values()):
        assert never and never not in trail, f"the audit trail holds {never[:40]!r}"

    events = [json.loads(line) for p in files if not p.name.endswith(".checkpoints.jsonl") for line in p.open()]
    by = {(e["kind"], e["body"].get("request_id")): e["body"] for e in events}
    started, call = by[("call_started", served_id)], by[("call", served_id)]
    assert started["request_sha256"] == call["request_sha256"] == hashlib.sha256(request_bytes).hexdigest()
    assert call["response_sha256"] == hashlib.sha256(answer_bytes).hexdigest()
    assert (call["status"], call["outcome"], call["deployment"], call["stream"]) == (200, "ok", "oa", False)
    assert call["tokens"]["prompt"] > 0
    # A static key's visible id is the name of its environment variable, never the key.
    assert started["subject"] == call["subject"] == "env:MH_AE_CLIENT" and call["principal_source"] == "static"
    streamed_calls = [b for (k, _), b in by.items() if k == "call" and b["stream"]]
    assert len(streamed_calls) == 1 and len(streamed_calls[0]["response_sha256"]) == 64
    denial = by[("policy_denial", denied_id)]
    assert (denial["status"], denial["error_code"], denial["model_group"]) == (429, "budget_exceeded", "gpt")
    assert ("call", denied_id) not in by  # a refused call is a denial, not a call

    out = subprocess.run(
        [sys.executable, "-m", "multihome.cli", "audit", "verify", "--dir", str(audit_dir), "--public-key", str(pub)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
