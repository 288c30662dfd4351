"""Hostile strings on the console's pages, in Chromium: every string a tenant-admin, a member's client or an
org-admin's typo puts in the store or the audit trail (tenant, team and key names, a policy's description, an
entitlement's and a pin's note, a call's `user`, model names, a request id searched for, the login form's
`next`) is shown as text. A page that ran one would open a dialog (an alert) or hold an element the payload
made (`[data-xss]`); the payload's own text must be on the page, so the check can fail.

A tenant-admin's pages hold nothing of another tenant (names, ids, keys, teams), whatever it opens.

Coverage of docs/console.md "Front end" and "Logging in, sessions and roles"; it found no hole.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import openai
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from .test_console import CHROMIUM, Demo, login

XSS = "\"'><img src=x data-xss onerror=alert(1)><svg data-xss onload=alert(2)>{{7*7}}</textarea>"


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module's tests (each makes contexts of its own)."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(autouse=True)
def _own_contexts(browser):
    """What a test opened in the shared browser is closed when it ends."""
    yield
    for context in browser.contexts:
        context.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = Demo(tmp_path_factory.mktemp("console-hostile"))
    yield d
    d.admin.close()
    d.proc.stop()


def _ok(resp, status: int = 201) -> dict:
    assert resp.status_code == status, resp.text
    return resp.json()


def _hostile_tenant(demo: Demo) -> dict:
    """A tenant whose every free-text field holds the payload, with calls served, refused and denied."""
    admin = demo.admin
    tenant = _ok(admin.post("/tenants", json={"name": "T " + XSS, "metadata": {"note": XSS}}))["id"]
    team = _ok(admin.post(f"/tenants/{tenant}/teams", json={"name": "team " + XSS}))["id"]
    owner = _ok(admin.post(f"/tenants/{tenant}/keys", json={"name": "owner " + XSS, "roles": ["tenant-admin"]}))
    member = _ok(admin.post(f"/tenants/{tenant}/keys", json={"name": "app " + XSS, "team_id": team}))
    policy = {"scope": "team", "scope_id": team, "description": XSS}
    _ok(
        admin.post(f"/tenants/{tenant}/policies", json={**policy, "rules": [{"effect": "deny", "regions": ["mars-1"]}]})
    )
    budget = {"scope": "key", "scope_id": member["id"], "amount": "5"}
    _ok(admin.post(f"/tenants/{tenant}/budgets", json=budget))
    grant = {"model_group": "gpt-4o", "starts_on": "2026-01-01", "ends_on": "2027-12-31", "note": XSS}
    _ok(admin.post(f"/tenants/{tenant}/entitlements", json=grant))
    client = demo.client(member["key"])
    served = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": XSS}], user=XSS
    )
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model=XSS, messages=[{"role": "user", "content": "x"}])
    return {"tenant": tenant, "owner": owner["key"], "member": member["key"], "served": served.headers["x-request-id"]}


def _no_script_ran(page: Page, dialogs: list[str], where: str) -> None:
    page.wait_for_load_state("networkidle")
    assert page.locator("[data-xss]").count() == 0, f"{where}: the payload made an element"
    assert not dialogs, f"{where}: a dialog opened: {dialogs}"


def _opened(like: Page, paths: list[str], dialogs: list[str], root: str, prefix: str = "") -> dict[str, Page]:
    """Each of `paths` in a tab of its own in `like`'s browser context (its session), each checked as
    `_no_script_ran`. The tabs load side by side: each tab's wait for its network to go quiet (half a second
    at least) overlaps the others' instead of following them."""
    pages: dict[str, Page] = {}
    try:
        for path in paths:
            page = like.context.new_page()
            page.on("dialog", lambda d, path=path: (dialogs.append(f"{prefix}{path}: {d.message}"), d.dismiss()))
            pages[path] = page
            page.goto(root + path)
        for path, page in pages.items():
            _no_script_ran(page, dialogs, prefix + path)
    except BaseException:
        for page in pages.values():
            page.close()
        raise
    return pages


def _close(pages: dict[str, Page]) -> None:
    for page in pages.values():
        page.close()


def test_no_hostile_string_runs_on_any_page(demo, browser):
    world = _hostile_tenant(demo)
    tenant = world["tenant"]
    dialogs: list[str] = []
    org = login(browser, demo, demo.admin_key)
    org.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    expect(org).to_have_url(re.compile(r"/console/overview$"))
    # Pages that must show the payload as text (so the check can fail); the audit trail's events are
    # shown as JSON, where it is escaped (\u003c).
    shown_as_text = {f"/console/tenants/{tenant}", "/console/tenants"}
    paths = [
        f"/console/tenants/{tenant}",
        "/console/tenants",
        f"/console/overview?tenant={tenant}",
        "/console/routing",
        f"/console/spend?tenant={tenant}&group_by=team",
        f"/console/spend?tenant={tenant}&group_by=key",
        f"/console/audit?tenant={tenant}",
        f"/console/audit?request_id={quote(world['served'])}",
        f"/console/audit?request_id={quote(XSS)}&since={quote(XSS)}",
        f"/console/state?tenant={tenant}",
        "/console/contracts",
        f"/console/overview?tenant={quote(XSS)}",
        f"/console/state/runs/run_x?tenant={quote(XSS)}",
        f"/console/nope{quote(XSS)}",
    ]
    pages = _opened(org, paths, dialogs, demo.root)
    for path in shown_as_text:
        expect(pages[path].locator("body")).to_contain_text(XSS)  # as text, the template syntax unevaluated
    _close(pages)
    # The route-explain form with the payload as the key id and the tenant.
    org.goto(demo.root + "/console/routing")
    org.fill("input[name=tenant]", XSS)
    org.fill("input[name=key_id]", XSS)
    org.click("button:has-text('Explain')")
    _no_script_ran(org, dialogs, "route explain")
    # A key and a team made in the browser with the payload as their names.
    org.goto(f"{demo.root}/console/tenants/{tenant}")
    org.fill("form[action$='/keys'] input[name=name]", "browser " + XSS)
    org.click("button:has-text('Create key')")
    _no_script_ran(org, dialogs, "key created")
    expect(org.locator("section.secret")).to_contain_text(XSS)
    org.fill("form[action$='/teams'] input[name=name]", "browser team " + XSS)
    org.click("button:has-text('Create team')")
    _no_script_ran(org, dialogs, "team created")

    # The tenant's own admin, on its pages.
    owner = login(browser, demo, world["owner"])
    owner.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    expect(owner).to_have_url(re.compile(r"/console/overview$"))
    paths = ["/console/overview", "/console/tenants", "/console/audit", "/console/state", "/console/spend"]
    pages = _opened(owner, paths, dialogs, demo.root, "tenant-admin ")
    for page in pages.values():
        expect(page.locator("header")).to_contain_text(tenant)
    _close(pages)

    # The login form, from a link with the payload in `next` and `notice`.
    stranger = browser.new_context().new_page()
    stranger.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    stranger.goto(f"{demo.root}/console/login?next={quote('/console/' + XSS)}&notice={quote(XSS)}")
    _no_script_ran(stranger, dialogs, "login form")
    stranger.fill("input[name=key]", demo.admin_key)
    stranger.click("button[type=submit]")
    _no_script_ran(stranger, dialogs, "after login")
    assert stranger.url.startswith(demo.root + "/console/")


def test_a_tenant_admin_sees_nothing_of_another_tenant_on_any_page(demo, browser):
    """The demo's own tenants (Acme Retail, Globex Bank) have keys, teams, policies, budgets, calls and denials;
    the admin of a new tenant, with calls of its own, opens every page its role may: none of theirs is on it."""
    admin = demo.admin
    tenant = _ok(admin.post("/tenants", json={"name": "Initech"}))["id"]
    owner = _ok(admin.post(f"/tenants/{tenant}/keys", json={"name": "initech-admin", "roles": ["tenant-admin"]}))
    member = _ok(admin.post(f"/tenants/{tenant}/keys", json={"name": "initech-app"}))
    assert (
        demo.client(member["key"])
        .chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hello"}])
        .choices
    )
    others = {demo.acme, demo.globex, "Acme Retail", "Globex Bank"}
    for other in (demo.acme, demo.globex):  # their keys' and teams' ids and names too
        for resource in ("keys", "teams"):
            for row in admin.get(f"/tenants/{other}/{resource}").json()["data"]:
                others |= {row["id"], row["name"]}
    page = login(browser, demo, owner["key"])
    expect(page).to_have_url(re.compile(r"/console/overview$"))
    paths = [
        "/console/overview",
        "/console/routing",
        "/console/tenants",
        "/console/spend",
        "/console/spend?group_by=key",
        "/console/audit",
        "/console/state",
    ]
    dialogs: list[str] = []
    pages = _opened(page, paths, dialogs, demo.root)
    for path, tab in pages.items():
        html = tab.content()
        assert "Initech" in html or tenant in html, path
        shown = sorted(o for o in others if o in html)
        assert not shown, f"{path} shows another tenant's {shown}"
    _close(pages)
    csv = page.request.get(demo.root + "/console/spend.csv?group_by=key")
    assert csv.ok and not [o for o in others if o in csv.text()]
