"""A cut-off names whose subject: an OIDC issuer and a token's subject, or an API key by its own id (docs/console.md
"Ending sessions"), in process on SQLite then PostgreSQL with two local OpenID Connect issuers. Ending "alice"
of issuer A ends no session of "alice" of issuer B, nor of a key; a subject without its issuer is a 400; and a
tenant-admin's cut-off of a token subject ends no session in which that subject is an org-admin."""

from __future__ import annotations

import pytest

from admin_http import error, ok, running
from builders import database, identity, oidc, single
from console_browser import client, login, opens
from oidc_issuer import LocalIssuer

pytestmark = pytest.mark.anyio
ADMIN_ENV = "MH_TEST_CONSOLE_ENDS_ISS"
ADMIN_KEY = "mh-bootstrap-admin-key-for-console-ends-issuers"
URL = "/admin/v1/console-session-ends"
ROLES = {"ai-admins": "tenant-admin", "ai-root": "org-admin"}


async def test_ending_alice_of_one_issuer_leaves_alice_of_another(db_url, monkeypatch):
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    with LocalIssuer(path="/realms/a") as a, LocalIssuer(path="/realms/b") as b:
        issuers = (oidc(a, name="a", role_map=ROLES), oidc(b, name="b", role_map=ROLES))
        cfg = single(storage=database(db_url), identity=identity(ADMIN_ENV, *issuers))
        async with running(cfg) as app, client(app, ADMIN_KEY) as root:
            acme = (await ok(await root.post("/admin/v1/tenants", json={"name": "acme"}), 201))["id"]
            made = await ok(
                await root.post(f"/admin/v1/tenants/{acme}/keys", json={"name": "ta", "roles": ["tenant-admin"]}), 201
            )

            def token(issuer: LocalIssuer, sub: str, role: str = "ai-admins") -> str:
                return issuer.mint(sub=sub, tenant=acme, roles=[role], exp_in=3600)

            alice_a, alice_b = await login(app, token(a, "alice")), await login(app, token(b, "alice"))
            # A token whose subject is a key's id is not that key.
            key_like = await login(app, token(a, made["id"]))
            key_session = await login(app, made["key"])
            assert all([await opens(app, c) for c in (alice_a, alice_b, key_like, key_session)])

            refused = error(await root.post(URL, json={"subject": "alice"}), 400)  # alice of which issuer?
            assert refused["param"] == "issuer"
            assert error(await root.post(URL, json={"subject": "alice", "issuer": "c"}), 400)["param"] == "issuer"

            ended = await ok(await root.post(URL, json={"subject": "alice", "issuer": "a"}), 201)
            assert (ended["issuer"], ended["issuer_name"]) == (a.issuer, "a")
            # Before: both alices were ended (the cut-off named the subject only).
            assert not await opens(app, alice_a)
            assert await opens(app, alice_b)
            by_key = await ok(await root.post(URL, json={"subject": made["id"]}), 201)  # a key: its own id
            assert by_key["issuer"] == "api_key"
            assert not await opens(app, key_session)
            assert await opens(app, key_like)

            # A tenant-admin of acme ends bob of issuer A: bob's sessions as a tenant-admin end, but not the one
            # in which bob's token makes him an org-admin (a role a tenant-admin cannot grant, so not end).
            bob_admin, bob_root = await login(app, token(a, "bob")), await login(app, token(a, "bob", "ai-root"))
            ta_key = await ok(
                await root.post(f"/admin/v1/tenants/{acme}/keys", json={"name": "ta2", "roles": ["tenant-admin"]}),
                201,
            )
            async with client(app, ta_key["key"]) as ta:
                cut = await ok(await ta.post(URL, json={"subject": "bob", "issuer": a.issuer}), 201)
            assert (cut["set_by_role"], cut["tenant_id"]) == ("tenant-admin", acme)
            assert not await opens(app, bob_admin)
            assert await opens(app, bob_root)
