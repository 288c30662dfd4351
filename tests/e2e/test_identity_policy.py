"""Identity, tenants and policy end to end, on SQLite and on a real PostgreSQL: API keys and OIDC
JWTs, RBAC on the admin API, tenant isolation, revocation on every replica, EU-only residency
that fails closed, and entitlements whose explanation agrees with enforcement."""

from __future__ import annotations

import datetime as dt
import time

import httpx
import jwt
import openai
import pytest
from openapi_spec_validator import validate

from builders import config, database_env, deployment, group, identity, oidc, simulated
from oidc_issuer import LocalIssuer  # tests/ is on sys.path (pytest rootdir insertion)

from .helpers import stale_for
from .processes import Gateway, Simulator, started_together
from .stores import head_database

ADMIN_KEY = "mh-bootstrap-admin-key-for-tests"
USER = [{"role": "user", "content": "hello"}]
TODAY = dt.datetime.now(dt.UTC).date()


def _config(us: str, eu: str, issuer: LocalIssuer) -> dict:
    """Two data zones (an OpenAI simulator each), a group across both and one that needs an entitlement."""
    return config(
        storage=database_env(),
        identity=identity("MH_TEST_ADMIN_KEY", oidc(issuer)),
        providers={
            "us": simulated("openai", us, region="us-east-1", data_zone="US"),
            "eu": simulated("openai", eu, region="eu-west-1", data_zone="EU"),
        },
        deployments={
            "us-main": deployment("us", "us-main"),
            "eu-main": deployment("eu", "eu-main"),
            "us-licensed": deployment("us", "us-licensed"),
        },
        model_groups={
            "gpt-4o": group("us-main", "eu-main", retries=0),
            "licensed": group("us-licensed", requires_entitlement=True),
        },
    )


class World:
    def __init__(self, gateways, us, eu, issuer):
        self.gw, self.gw2 = gateways
        self.us, self.eu, self.issuer = us, eu, issuer
        self.admin = self.http(ADMIN_KEY)

    def http(self, key: str, gw=None) -> httpx.Client:
        return httpx.Client(base_url=(gw or self.gw).url, headers={"authorization": f"Bearer {key}"}, timeout=10)

    def sdk(self, key: str, gw=None) -> openai.OpenAI:
        return openai.OpenAI(base_url=(gw or self.gw).url + "/v1", api_key=key, max_retries=0, timeout=10)

    def ok(self, resp: httpx.Response, status: int = 200) -> dict:
        assert resp.status_code == status, resp.text
        return resp.json()

    def key(self, tenant: str, roles=("member",), client=None, **extra) -> tuple[str, str]:
        out = self.ok(
            (client or self.admin).post(
                f"/admin/v1/tenants/{tenant}/keys", json={"name": "k", "roles": list(roles), **extra}
            ),
            201,
        )
        return out["id"], out["key"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    db = head_database(request, request.param, tmp)  # migrated: the replicas start together
    us, eu = Simulator("openai", "us"), Simulator("openai", "eu")
    issuer = LocalIssuer().start()
    cfg = _config(us.url, eu.url, issuer)
    env = {"MH_TEST_DB": db, "MH_TEST_ADMIN_KEY": ADMIN_KEY}
    replicas = (Gateway(cfg, tmp, env, wait=False), Gateway(cfg, tmp, env, wait=False))  # one database
    gateways = started_together(*replicas)
    w = World(gateways, us, eu, issuer)
    w.a = w.ok(w.admin.post("/admin/v1/tenants", json={"name": "acme"}), 201)["id"]
    w.b = w.ok(w.admin.post("/admin/v1/tenants", json={"name": "globex"}), 201)["id"]
    yield w
    logs = [g.stop() for g in gateways]
    for sim in (us, eu):
        sim.stop()
    issuer.stop()
    for log in logs:
        assert ADMIN_KEY not in log and "mh_" not in log


# A change made through one replica: it answers the new way at once, the other within its snapshot refresh
# (storage.refresh_s, 0.25 s); measured on the replica's side (helpers.Staleness), not by when the test
# noticed. A revoked API key: "refused on every replica within a second" (docs/api.md).
BOUND_S, KEY_REVOKED_S = 2.0, 1.0


def test_managed_key_calls_models_and_is_stored_hashed(world):
    key_id, secret = world.key(world.a)
    assert secret.startswith("mh_") and key_id.startswith("key_")
    reply = world.sdk(secret).chat.completions.create(model="gpt-4o", messages=USER)
    assert reply.choices[0].message.content
    listed = world.ok(world.admin.get(f"/admin/v1/tenants/{world.a}/keys"))["data"]
    mine = [k for k in listed if k["id"] == key_id][0]
    assert mine["key"] is None and "hash" not in mine and secret[3:11] == mine["prefix"]


def test_revocation_reaches_every_replica_within_a_second(world):
    key_id, secret = world.key(world.a)
    other = world.sdk(secret, world.gw2)
    assert other.chat.completions.create(model="gpt-4o", messages=USER).choices
    world.ok(world.admin.delete(f"/admin/v1/tenants/{world.a}/keys/{key_id}"))
    committed = time.monotonic()

    def refused() -> bool:
        try:
            other.chat.completions.create(model="gpt-4o", messages=USER)
            return False
        except openai.AuthenticationError:
            return True

    stale = stale_for(refused, committed, what="the key's revocation on the other replica")
    assert stale.within(KEY_REVOKED_S), f"the other replica accepted the revoked key afterwards: {stale}"


def test_expired_key_is_refused(world):
    """A key works until its expires_at (the gateway's own time) and is refused from then on. A busy
    machine may take longer than a short lifetime to make the key and answer: then a longer one."""
    for lifetime_s in (1.5, 6, 30, 120):
        made = world.ok(
            world.admin.post(
                f"/admin/v1/tenants/{world.a}/keys", json={"name": "k", "expires_in_days": lifetime_s / 86400}
            ),
            201,
        )
        expires = dt.datetime.fromisoformat(made["expires_at"]).timestamp()
        client = world.sdk(made["key"])
        try:
            answered = bool(client.chat.completions.create(model="gpt-4o", messages=USER).choices)
        except openai.AuthenticationError:
            answered = False
        if time.time() < expires:  # answered before the key expired: it must have been served
            assert answered, "a key was refused before its expires_at"
            break
    else:
        raise AssertionError("no key lived long enough to be used once")
    while time.time() <= expires:
        time.sleep(0.05)
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="gpt-4o", messages=USER)
    assert "revoked or expired" in info.value.message


def test_tenant_isolation(world):
    _, a_admin = world.key(world.a, roles=["tenant-admin"])
    b_key_id, b_secret = world.key(world.b)
    a = world.http(a_admin)
    for method, path in [
        ("GET", f"/admin/v1/tenants/{world.b}"),
        ("GET", f"/admin/v1/tenants/{world.b}/keys"),
        ("GET", f"/admin/v1/tenants/{world.b}/keys/{b_key_id}"),
        ("DELETE", f"/admin/v1/tenants/{world.b}/keys/{b_key_id}"),
        ("GET", f"/admin/v1/tenants/{world.b}/policies"),
        ("GET", f"/admin/v1/tenants/{world.b}/events"),
    ]:
        resp = a.request(method, path)
        assert resp.status_code == 403, (method, path, resp.text)
        assert resp.json()["error"]["code"] == "other_tenant"
    resp = a.post(f"/admin/v1/tenants/{world.b}/policies", json={"scope": "tenant", "rules": [{"effect": "deny"}]})
    assert resp.status_code == 403
    # Tenant A's admin sees only tenant A, and cannot reach B's key through A's path either.
    assert [t["id"] for t in world.ok(a.get("/admin/v1/tenants"))["data"]] == [world.a]
    assert a.get(f"/admin/v1/tenants/{world.a}/keys/{b_key_id}").status_code == 404
    # B's key still works: A's attempt to revoke it did nothing.
    assert world.sdk(b_secret).chat.completions.create(model="gpt-4o", messages=USER).choices


def test_rbac_roles(world):
    _, member = world.key(world.a)
    _, auditor = world.key(world.a, roles=["auditor"])
    _, tadmin = world.key(world.a, roles=["tenant-admin"])
    m, au, ta = world.http(member), world.http(auditor), world.http(tadmin)
    assert world.ok(m.get("/admin/v1/whoami"))["tenant"] == world.a
    denied = m.get(f"/admin/v1/tenants/{world.a}/keys").json()["error"]
    assert denied["code"] == "insufficient_role" and "tenant-admin" in denied["message"]
    assert au.get(f"/admin/v1/tenants/{world.a}/events").status_code == 200
    assert au.post(f"/admin/v1/tenants/{world.a}/keys", json={"name": "x"}).status_code == 403
    grant = {"model_group": "licensed", "starts_on": str(TODAY), "ends_on": str(TODAY)}
    assert ta.post(f"/admin/v1/tenants/{world.a}/entitlements", json=grant).status_code == 403
    assert ta.post(f"/admin/v1/tenants/{world.a}/keys", json={"name": "x", "roles": ["org-admin"]}).status_code == 403
    assert ta.post("/admin/v1/tenants", json={"name": "sneaky"}).status_code == 403


def test_admin_changes_are_recorded_with_the_actor(world):
    key_id, _ = world.key(world.a)
    events = world.ok(world.admin.get(f"/admin/v1/tenants/{world.a}/events?limit=1000"))["data"]
    (created,) = [e for e in events if e["object_id"] == key_id]
    assert created["actor"] == "bootstrap-admin" and created["tenant_id"] == world.a
    assert "mh_" not in str(events)


def test_eu_only_tenant_never_reaches_a_us_deployment(world):
    _, b_admin = world.key(world.b, roles=["tenant-admin"])
    policy = {"scope": "tenant", "rules": [{"effect": "allow", "data_zones": ["EU"]}], "description": "EU only"}
    world.ok(world.http(b_admin).post(f"/admin/v1/tenants/{world.b}/policies", json=policy), 201)
    committed = time.monotonic()  # made through the replica that serves the calls below
    _, b_member = world.key(world.b)
    client = world.sdk(b_member)

    def eu_served() -> bool:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
        return raw.headers["x-multihome-deployment"] == "eu-main"

    assert stale_for(eu_served, committed, what="the EU-only policy").within(BOUND_S)
    world.eu.fault(status=503)
    try:
        rids = []
        for _ in range(3):
            with pytest.raises(openai.InternalServerError) as info:
                client.chat.completions.create(model="gpt-4o", messages=USER)
            assert info.value.status_code == 503
            assert "us-main: denied by policy" in info.value.message
            rids.append(info.value.response.headers["x-request-id"])
    finally:
        world.eu.clear_faults()
    us_seen = {r["request_id"] for r in world.us.requests()}
    assert not us_seen & set(rids), "an EU-only tenant's call reached the US simulator"
    # Tenant A has no such policy: its calls still go to the US primary.
    _, a_member = world.key(world.a)
    raw = world.sdk(a_member).chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    assert raw.headers["x-multihome-deployment"] == "us-main"


def test_entitlements_expiry_exclusivity_and_explain(world):
    _, a_member = world.key(world.a)
    a_id, b_member = world.key(world.b)
    a_client, b_client = world.sdk(a_member), world.sdk(b_member)
    with pytest.raises(openai.PermissionDeniedError) as info:
        a_client.chat.completions.create(model="licensed", messages=USER)
    assert info.value.code == "entitlement_required"
    grant = {
        "model_group": "licensed",
        "starts_on": str(TODAY - dt.timedelta(days=1)),
        "ends_on": str(TODAY + dt.timedelta(days=30)),
        "exclusive": True,
    }
    ent = world.ok(world.admin.post(f"/admin/v1/tenants/{world.a}/entitlements", json=grant), 201)
    granted = time.monotonic()
    overlapping = world.admin.post(f"/admin/v1/tenants/{world.b}/entitlements", json={**grant, "exclusive": False})
    assert overlapping.status_code == 409 and ent["id"] in overlapping.text
    for family in ("licen*", "*"):  # a family covering another tenant's exclusive grant (issue 11 #9)
        covering = world.admin.post(
            f"/admin/v1/tenants/{world.b}/entitlements", json={**grant, "model_group": family, "exclusive": False}
        )
        assert covering.status_code == 409 and ent["id"] in covering.text, covering.text
    old = {"model_group": "licensed", "starts_on": "2020-01-01", "ends_on": "2020-12-31"}
    expired = world.ok(world.admin.post(f"/admin/v1/tenants/{world.b}/entitlements", json=old), 201)

    def a_allowed() -> bool:
        try:
            return bool(a_client.chat.completions.create(model="licensed", messages=USER).choices)
        except openai.PermissionDeniedError:
            return False

    assert stale_for(a_allowed, granted, what="the entitlement").within(BOUND_S)
    with pytest.raises(openai.PermissionDeniedError) as info:
        b_client.chat.completions.create(model="licensed", messages=USER)
    assert info.value.code in ("entitlement_expired", "exclusive_to_other_tenant")
    enforced = info.value.code
    explain = world.ok(world.admin.post("/admin/v1/policy/explain", json={"tenant_id": world.b, "model": "licensed"}))
    assert explain["allowed"] is False and explain["code"] == enforced
    if enforced == "entitlement_expired":
        assert expired["id"] in explain["message"]
    explain_a = world.ok(world.admin.post("/admin/v1/policy/explain", json={"tenant_id": world.a, "model": "licensed"}))
    assert explain_a["allowed"] is True and explain_a["entitlement_id"] == ent["id"]
    # Explaining a day after the term: refused, naming the grant.
    later = str(TODAY + dt.timedelta(days=31))
    after = world.ok(
        world.admin.post("/admin/v1/policy/explain", json={"tenant_id": world.a, "model": "licensed", "on": later})
    )
    assert after["code"] == "entitlement_expired" and ent["id"] in after["message"]


def test_key_scopes_give_403_with_the_rule(world):
    _, scoped = world.key(world.a, scopes_models=["gpt-4o"])
    with pytest.raises(openai.PermissionDeniedError) as info:
        world.sdk(scoped).chat.completions.create(model="licensed", messages=USER)
    assert info.value.code == "model_not_in_key_scope"


def test_jwt_federation(world):
    issuer = world.issuer
    good = issuer.mint(tenant=world.a, roles=["ai-admins"])
    reply = world.sdk(good).chat.completions.create(model="gpt-4o", messages=USER)
    assert reply.choices
    who = world.ok(world.http(good).get("/admin/v1/whoami"))
    assert who["tenant"] == world.a and "tenant-admin" in who["roles"] and who["source"] == "oidc:local"
    other = LocalIssuer().start()
    try:
        signed_by_stranger = other.mint(tenant=world.a, iss=issuer.issuer)
        wrong_issuer = other.mint(tenant=world.a)
    finally:
        other.stop()
    header, payload, sig = good.split(".")
    tampered_payload = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(world.a.encode(), world.b.encode())
    ).decode()
    cases = {
        "expired": issuer.mint(tenant=world.a, exp_in=-120),
        "wrong audience": issuer.mint(tenant=world.a, aud="someone-else"),
        "wrong issuer": wrong_issuer,
        "unknown signing key": signed_by_stranger,
        "alg none": jwt.encode(issuer.claims(tenant=world.a), None, algorithm="none"),
        "HS/RS confusion": _hs256_with_public_key(issuer, world.a),
        "tampered payload": ".".join([header, tampered_payload, sig]),
        "tampered signature": ".".join([header, payload, sig[:-4] + ("AAAA" if sig[-4:] != "AAAA" else "BBBB")]),
    }
    for name, token in cases.items():
        with pytest.raises(openai.AuthenticationError) as info:
            world.sdk(token).chat.completions.create(model="gpt-4o", messages=USER)
        assert info.value.status_code == 401, name
        assert token not in info.value.message, name


def _hs256_with_public_key(issuer, tenant: str) -> str:
    """The classic key-confusion forgery: HMAC-sign with the issuer's *public* RSA key as secret."""
    import hashlib
    import hmac
    import json

    enc = jwt.utils.base64url_encode
    head = enc(json.dumps({"alg": "HS256", "typ": "JWT", "kid": issuer.default_kid}).encode())
    body = enc(json.dumps(issuer.claims(tenant=tenant)).encode())
    sig = enc(hmac.new(issuer.public_pem(), head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


def test_openapi_document_is_valid(world):
    doc = httpx.get(world.gw.url + "/admin/v1/openapi.json").json()
    validate(doc)
    assert "/admin/v1/tenants/{tenant}/keys" in doc["paths"]


def test_tokens_for_unknown_or_offboarded_tenants_are_refused_and_new_tenants_work_at_once(world):
    """Issue 11 #6: a genuine token naming a made-up, reserved or deleted tenant is refused (403) on
    every replica; a tenant created on one replica is usable on the other without waiting."""
    for tenant in ("ten_madeup0000000000000", "*"):
        for gw in (world.gw, world.gw2):
            with pytest.raises(openai.PermissionDeniedError) as info:
                world.sdk(world.issuer.mint(tenant=tenant), gw).chat.completions.create(model="gpt-4o", messages=USER)
            assert info.value.code == "unknown_tenant", tenant
            assert "unknown or has been offboarded" in info.value.message and tenant not in info.value.message
    # Created through one replica, its users' tokens (and keys) work through the other one at once.
    doomed = world.ok(world.admin.post("/admin/v1/tenants", json={"name": "offboarded-soon"}), 201)["id"]
    token = world.issuer.mint(tenant=doomed, sub="leaver")
    _, secret = world.key(doomed)
    for credential in (token, secret):
        assert world.sdk(credential, world.gw2).chat.completions.create(model="gpt-4o", messages=USER).choices
    assert world.ok(world.http(token, world.gw2).get("/admin/v1/whoami"))["tenant"] == doomed
    world.ok(world.admin.delete(f"/admin/v1/tenants/{doomed}"))
    committed = time.monotonic()

    def offboarded(gw) -> bool:
        try:
            world.sdk(token, gw).chat.completions.create(model="gpt-4o", messages=USER)
            return False
        except openai.PermissionDeniedError as exc:
            assert exc.code == "unknown_tenant" and exc.status_code == 403
            return True

    assert offboarded(world.gw)  # the replica that deleted it: at once
    stale = stale_for(lambda: offboarded(world.gw2), committed, what="the offboarding on the other replica")
    assert stale.within(BOUND_S), stale  # the other: within its snapshot refresh
    for gw in (world.gw, world.gw2):
        with pytest.raises(openai.AuthenticationError):  # the tenant's API keys went with it
            world.sdk(secret, gw).chat.completions.create(model="gpt-4o", messages=USER)
        resp = world.http(token, gw).get("/admin/v1/whoami")
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "unknown_tenant"
