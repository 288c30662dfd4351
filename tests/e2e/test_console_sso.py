"""Single sign-on to the console in a real browser: Chromium, the gateway (`multihome serve`), and a local
OpenID Connect provider (tests/oidc_issuer.py) that signs people in with the authorization code flow."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from builders import NOWHERE, config, deployment, group, identity, oidc, open_door, sqlite
from oidc_issuer import LocalIssuer  # tests/ is on sys.path (pytest rootdir insertion)

from .processes import Gateway
from .stores import head_database
from .test_console import CHROMIUM

ADMIN_KEY = "mh-test-sso-admin-key"
CLIENT = "multihome-console"


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console-sso")
    head_database(request, "sqlite", tmp, "mh.db")  # the config's file, at the head revision
    issuer = LocalIssuer().start()
    cfg = config(
        providers={"p": {"kind": "openai", "endpoint": NOWHERE}},
        deployments={"d": deployment("p", "m")},
        model_groups={"g": group("d")},
        server=open_door(allow_unauthenticated=False),
        storage=sqlite(tmp / "mh.db"),
        identity=identity(
            "MH_TEST_ADMIN_KEY",
            oidc(issuer, audiences=[CLIENT], role_map={"mh-admins": "org-admin", "ops": "tenant-admin"}),
        ),
        console={"oidc": {"issuer": "local", "client_id": CLIENT, "button": "Sign in with Local IdP"}},
    )
    gateway = Gateway(cfg, tmp, {"MH_TEST_ADMIN_KEY": ADMIN_KEY})
    admin = httpx.Client(base_url=gateway.url + "/admin/v1", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    tenant = admin.post("/tenants", json={"name": "Acme"}).json()["id"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield gateway, issuer, browser, tenant
        browser.close()
    admin.close()
    log = gateway.stop()
    issuer.stop()
    assert "eyJ" not in log  # no ID token in the gateway's log


def sign_in(world, **claims):
    gateway, issuer, browser, tenant = world
    issuer.login_as = {"tenant": tenant, **claims}
    page = browser.new_context().new_page()
    page.goto(gateway.url + "/console/overview")
    page.click("text=Sign in with Local IdP")
    return page


def test_an_org_admin_signs_in_through_the_identity_provider(world):
    gateway, issuer, _, _ = world
    before = issuer.token_requests
    page = sign_in(world, sub="alice", roles=["mh-admins"])
    expect(page).to_have_url(re.compile(r"/console/overview$"))  # back where the sign-on started
    expect(page.locator("header .who")).to_contain_text("alice")
    expect(page.locator("header .who")).to_contain_text("org-admin")
    assert issuer.token_requests == before + 1
    cookie = next(c for c in page.context.cookies() if c["name"] == "mh_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and "eyJ" not in cookie["value"]
    page.goto(gateway.url + "/console/tenants")
    expect(page.locator("body")).to_contain_text("Acme")


def test_a_tenant_admin_by_sign_on_sees_their_tenant_only(world):
    gateway, _, _, tenant = world
    page = sign_in(world, sub="olga", roles=["ops"])
    expect(page).to_have_url(re.compile(r"/console/overview$"))
    assert page.goto(gateway.url + "/console/contracts").status == 403
    page.goto(gateway.url + "/console/tenants")
    expect(page).to_have_url(re.compile(f"/console/tenants/{tenant}$"))


def test_a_person_without_a_console_role_or_a_forged_callback_is_refused(world):
    gateway, _, browser, _ = world
    page = sign_in(world, sub="bob", roles=[])
    expect(page.locator(".failed")).to_contain_text("no console role")
    assert not [c for c in page.context.cookies() if c["name"] == "mh_console"]
    # A callback this browser did not start (no pending sign-on, or another state) signs nobody in.
    other = browser.new_context().new_page()
    resp = other.goto(gateway.url + "/console/oidc/callback?code=stolen&state=guessed")
    assert resp.status == 401
    expect(other.locator(".failed")).to_contain_text("not started here")


def test_a_person_in_many_groups_stays_signed_in(world):
    """An identity provider's ID token with a person's every group (Entra ID sends up to 200, Keycloak all of
    them) is several kilobytes: sealed in one cookie it passed the 4,096 bytes a browser keeps of a cookie, so
    the browser dropped it and the person was sent back to the login form after every sign-on."""
    gateway, _, _, _ = world
    groups = [f"{i:08x}-7d1c-4f5e-9a0b-{i:012x}" for i in range(150)]  # GUIDs, as Entra ID names groups
    page = sign_in(world, sub="grace", roles=["mh-admins", *groups])
    expect(page).to_have_url(re.compile(r"/console/overview$"))
    expect(page.locator("header .who")).to_contain_text("grace")
    page.goto(gateway.url + "/console/tenants")
    expect(page.locator("body")).to_contain_text("Acme")
    # Logging out ends it: every part of the session is gone from the browser.
    page.click("text=Log out")
    expect(page).to_have_url(re.compile(r"/console/login"))
    assert not [c for c in page.context.cookies() if c["name"].startswith("mh_console")]
    page.goto(gateway.url + "/console/tenants")
    expect(page).to_have_url(re.compile(r"/console/login"))
