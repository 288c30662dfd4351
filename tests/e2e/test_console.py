"""The console in a real browser: Debian's Chromium driven by Playwright against `multihome demo`.

The demo is the gateway a newcomer runs (embedded store, metering, audit, contracts, a sample
organisation). The test makes its own calls through the front door with the official `openai` SDK,
then logs in, opens every page and checks it shows those calls, creates a key in the browser (the
secret works, once revoked it does not), follows a policy denial to its audit event, and saves a
screenshot of every page (into docs/console/ with MULTIHOME_SCREENSHOTS=docs). A tenant-admin cannot
open another tenant's pages by URL nor grant the auditor role, an auditor sees the audit trail only, a session ends when its key
is revoked, and a POST without the session's CSRF token is refused.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import httpx
import openai
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from .processes import VENV_BIN, Proc, free_port

CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/install-system-deps.sh); no browser download
# Screenshots land in docs/console/ only when asked (MULTIHOME_SCREENSHOTS=docs), so a test run leaves
# the checkout clean; otherwise they are still taken (the page must render) into a temporary folder.
DOCS_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
SHOTS = (
    DOCS_SHOTS
    if os.environ.get("MULTIHOME_SCREENSHOTS") == "docs"
    else Path(tempfile.gettempdir()) / "mh-console-shots"
)
DEADLINE_S = 60


class Demo:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.proc = Proc([str(VENV_BIN / "multihome"), "demo", "--port", str(self.port)], log=tmp / "demo.log")
        deadline = time.monotonic() + DEADLINE_S
        out = ""
        while time.monotonic() < deadline and "Demo ready" not in out:
            assert self.proc.popen.poll() is None, self.proc.output()
            time.sleep(0.2)
            out = self.proc.output()
        assert "Demo ready" in out, out
        self.out = out
        self.admin_key = re.search(r"export MULTIHOME_ADMIN_KEY=(\S+)", out).group(1)
        assert f"See it in the console: {self.root}/console" in out
        tenants = dict(re.findall(r"'(Acme Retail|Globex Bank)' \((ten_\w+)\)", out))  # the stored names
        self.acme, self.globex = tenants["Acme Retail"], tenants["Globex Bank"]
        self.admin = httpx.Client(
            base_url=self.root + "/admin/v1", headers={"authorization": f"Bearer {self.admin_key}"}
        )

    def key(self, tenant: str, name: str, role: str = "member") -> dict:
        resp = self.admin.post(f"/tenants/{tenant}/keys", json={"name": name, "roles": [role]})
        assert resp.status_code == 201, resp.text
        return resp.json()

    def client(self, secret: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.root + "/v1", api_key=secret, max_retries=0)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = Demo(tmp_path_factory.mktemp("console"))
    yield d
    d.admin.close()
    d.proc.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def login(browser: Browser, demo: Demo, secret: str) -> Page:
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.goto(demo.root + "/console/")
    expect(page).to_have_url(re.compile(r"/console/login"))  # no session: the login form
    page.fill("input[name=key]", secret)
    page.click("button[type=submit]")
    return page


def shot(page: Page, name: str, secrets: tuple[str, ...] = ()) -> None:
    """Save the page's screenshot (SHOTS), after checking no secret is on it."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_load_state("networkidle")
    html = page.content()
    assert not [s for s in secrets if s in html], f"a secret is on the {name} page"
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def refused(client: openai.OpenAI) -> bool:
    try:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "still valid?"}])
    except openai.AuthenticationError:
        return True
    return False


def test_the_console_shows_the_calls_made_follows_a_denial_and_manages_keys(demo, browser):
    # Real calls first: served ones for Acme (one streamed), and a call Globex's EU-only policy denies.
    acme_secret = demo.key(demo.acme, "console-test-app")["key"]
    acme = demo.client(acme_secret)
    served = acme.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello from the console test"}]
    )
    served_id = served.headers["x-request-id"]
    assert served.headers["x-multihome-deployment"] == "gpt-4o@azure-eastus"
    assert "".join(
        c.choices[0].delta.content or ""
        for c in acme.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "stream"}], stream=True
        )
        if c.choices
    )
    eu_secret = demo.key(demo.globex, "console-test-eu")["key"]
    globex = demo.client(eu_secret)
    with pytest.raises(openai.PermissionDeniedError) as denied:
        globex.chat.completions.create(model="llama-3.1-8b", messages=[{"role": "user", "content": "outside the EU"}])
    denial_id = denied.value.response.headers["x-request-id"]
    hidden = (demo.admin_key, acme_secret, eu_secret)  # on no page, ever

    page = login(browser, demo, demo.admin_key)
    expect(page).to_have_url(re.compile(r"/console/overview$"))
    assert "script-src 'self'" in page.request.get(demo.root + "/console/overview").headers["content-security-policy"]
    expect(page.locator("table").first).to_contain_text("gpt-4o")
    expect(page.locator("canvas[data-chart=calls-chart]")).to_be_visible()
    shot(page, "overview", hidden)

    page.goto(demo.root + "/console/routing")
    expect(page.locator("body")).to_contain_text(served_id)  # the test's own call, with its attempts
    expect(page.locator("body")).to_contain_text("denied by policy")  # Globex's skipped deployments say why
    page.select_option("select[name=model]", "gpt-4o")
    page.fill("input[name=tenant]", demo.globex)
    page.click("button:has-text('Explain')")
    expect(page.locator(".explained")).to_contain_text("gpt-4o@azure-westeurope")  # EU only: the one it may use
    shot(page, "routing", hidden)

    # Follow the denial from Routing to its event in the audit trail.
    page.click(f"a.denial:has-text('{denial_id}')")
    expect(page).to_have_url(re.compile(r"/console/audit\?request_id=" + denial_id))
    event = page.locator("tr.kind-policy_denial")
    expect(event).to_have_count(1)
    expect(event.locator(".policy-code")).to_have_text("egress_denied")
    expect(page.locator("#verification")).to_contain_text("Chain verified")
    shot(page, "audit", hidden)

    page.goto(demo.root + "/console/tenants")
    expect(page.locator("body")).to_contain_text("Globex Bank")
    page.click("text=Acme Retail")
    expect(page.locator("body")).to_contain_text("console-test-app")
    expect(page.locator("body")).to_contain_text("exclusive")  # the entitlement, on its timeline
    expect(page.locator("canvas[data-chart=entitlements-chart]")).to_be_visible()

    # Create a key in the browser: its secret is shown once, and works; revoked, it no longer does.
    page.fill("form[action$='/keys'] input[name=name]", "made-in-the-browser")
    page.click("button:has-text('Create key')")
    secret = page.locator("#new-key-secret").inner_text().strip()
    assert secret.startswith("mh_")
    made = demo.client(secret)
    assert made.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}]).choices
    page.goto(f"{demo.root}/console/tenants/{demo.acme}")  # the tenant page again: the secret is not on it any more
    assert secret not in page.content()
    row = page.locator("tr", has_text="made-in-the-browser")
    row.locator("button:has-text('Revoke')").click()
    expect(page.locator(".notice")).to_contain_text("Key revoked")
    expect(page.locator("tr", has_text="made-in-the-browser")).to_contain_text("revoked")
    deadline = time.monotonic() + 10
    while not refused(made) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert refused(made)
    shot(page, "tenant", hidden)

    page.goto(f"{demo.root}/console/spend?tenant={demo.acme}&group_by=key&interval=hour")
    expect(page.locator("body")).to_contain_text("Totals by key")
    expect(page.locator("table")).to_contain_text("key_")
    shot(page, "spend", hidden)
    csv = page.request.get(f"{demo.root}/console/spend.csv?tenant={demo.acme}&group_by=model_group&interval=hour")
    assert csv.ok and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text().splitlines()
    assert lines[0].startswith("bucket,model_group,currency,calls")
    assert any(line.split(",")[1] == "gpt-4o-mini" for line in lines[1:])

    page.goto(demo.root + "/console/contracts")
    expect(page.locator("body")).to_contain_text("rs-openai-resale")
    expect(page.locator("body")).to_contain_text("azure-commit")
    expect(page.locator("canvas[data-chart=scenario-1]")).to_be_visible()
    shot(page, "contracts", hidden)

    # The stateful runtime: the test's own stored response and conversation are counted, never shown.
    conversation = acme.conversations.create(items=[{"type": "message", "role": "user", "content": "secret plan"}])
    stored = acme.responses.create(model="gpt-4o", input="the launch codes", conversation=conversation.id, store=True)
    page.goto(f"{demo.root}/console/state?tenant={demo.acme}")
    completed = page.locator("tr", has_text="completed")
    expect(completed).to_be_visible()
    assert int(completed.locator("td").nth(1).inner_text()) >= 3  # the demo's two and the test's one
    expect(page.locator("table.kv")).to_contain_text("conversations")
    assert (
        "launch codes" not in page.content() and "secret plan" not in page.content() and stored.id not in page.content()
    )
    shot(page, "state", hidden)

    # A POST without the session's CSRF token is refused, whatever the cookie says.
    forged = page.request.post(f"{demo.root}/console/tenants/{demo.acme}/teams", form={"name": "forged"})
    assert forged.status == 403
    assert "forged" not in demo.admin.get(f"/tenants/{demo.acme}/teams").text


def explain(page: Page, tenant: str, model: str, work: str) -> None:
    page.select_option("select[name=model]", model)
    page.fill("input[name=tenant]", tenant)
    page.select_option("select[name=work]", work)
    page.click("button:has-text('Explain')")


def test_route_explain_in_the_console_shows_what_a_stateful_work_pin_removed(demo, browser):
    # Acme's agent steps and memory embeddings are pinned to the OpenAI provider (a hosting contract).
    resp = demo.admin.post(
        f"/tenants/{demo.acme}/stateful-pins",
        json={"providers": ["openai"], "work": ["agent_step", "memory_embedding"], "note": "contract c-9"},
    )
    assert resp.status_code == 201, resp.text
    pin = resp.json()["id"]
    try:
        page = login(browser, demo, demo.admin_key)
        page.goto(demo.root + "/console/routing")
        explain(page, demo.acme, "gpt-4o", "agent_step")
        pinned = page.locator(".explained .pinned")
        expect(pinned).to_contain_text(pin)
        expect(pinned).to_contain_text("providers openai")
        expect(pinned).to_contain_text("gpt-4o@azure-eastus")  # removed by the pin, with why
        expect(pinned).to_contain_text("gpt-4o@azure-westeurope")
        expect(page.locator(".explained")).to_contain_text("Would attempt, in order: gpt-4o@openai")
        expect(page.locator("select[name=work]")).to_have_value("agent_step")  # the form keeps the choice

        # A memory embedding is explained as an embeddings call of the embeddings group.
        explain(page, demo.acme, "text-embedding-3-small", "memory_embedding")
        expect(page.locator(".explained .pinned")).to_contain_text("embed-small@azure-eastus")
        expect(page.locator(".explained")).to_contain_text("Would attempt, in order: embed-small@openai")

        # Stateful work the pin does not cover, and a stateless call, route as before.
        explain(page, demo.acme, "gpt-4o", "background")
        expect(page.locator(".explained .pinned")).to_contain_text("No stateful-work pin")
        expect(page.locator(".explained")).to_contain_text("gpt-4o@azure-eastus →")
        explain(page, demo.acme, "gpt-4o", "")
        expect(page.locator(".explained")).to_contain_text("gpt-4o@azure-eastus →")
        expect(page.locator(".explained .pinned")).to_have_count(0)
    finally:
        assert demo.admin.delete(f"/tenants/{demo.acme}/stateful-pins/{pin}").status_code == 200


def test_a_tenant_admin_sees_only_their_tenant_and_the_session_ends_with_the_key(demo, browser):
    made = demo.key(demo.acme, "acme-console-admin", "tenant-admin")
    page = login(browser, demo, made["key"])
    expect(page).to_have_url(re.compile(r"/console/overview$"))
    expect(page.locator("nav")).not_to_contain_text("Contracts")
    for path in (f"/tenants/{demo.globex}", f"/state?tenant={demo.globex}", f"/overview?tenant={demo.globex}"):
        resp = page.goto(demo.root + "/console" + path)
        assert resp.status == 403, path  # by URL, not only hidden from the menu
        expect(page.locator("h1")).to_contain_text("Not allowed")
    assert page.goto(demo.root + "/console/contracts").status == 403
    # Another tenant's id in a form is refused too.
    forged = page.request.post(
        f"{demo.root}/console/tenants/{demo.globex}/teams",
        form={"name": "x", "csrf": page.locator("input[name=csrf]").first.get_attribute("value")},
    )
    assert forged.status == 403
    resp = page.goto(demo.root + "/console/tenants")
    expect(page).to_have_url(re.compile(f"/console/tenants/{demo.acme}$"))
    assert resp.status == 200
    page.goto(demo.root + "/console/overview")
    expect(page.locator("h1")).to_contain_text(demo.acme)  # their own tenant's figures

    revoked = demo.admin.delete(f"/tenants/{demo.acme}/keys/{made['id']}")
    assert revoked.status_code == 200
    page.goto(demo.root + "/console/overview")
    expect(page).to_have_url(re.compile(r"/console/login\?"))
    expect(page.locator(".notice")).to_contain_text("session ended")


def test_only_an_org_admin_is_offered_and_granted_the_auditor_role(demo, browser):
    """An auditor reads the tenant's captures, which its tenant-admins may not: a tenant-admin's key form
    does not offer the role, and the form posted with it anyway is refused (no key is made)."""
    roles = "form[action$='/keys'] select[name=role] option"
    org = login(browser, demo, demo.admin_key)
    org.goto(f"{demo.root}/console/tenants/{demo.acme}")
    expect(org.locator(roles)).to_have_count(4)
    assert sorted(org.locator(roles).all_inner_texts()) == ["auditor", "member", "org-admin", "tenant-admin"]

    made = demo.key(demo.acme, "acme-console-granter", "tenant-admin")
    page = login(browser, demo, made["key"])
    page.goto(f"{demo.root}/console/tenants/{demo.acme}")
    expect(page.locator(roles)).to_have_text(["member", "tenant-admin"])
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    for role in ("auditor", "org-admin"):
        forged = page.request.post(
            f"{demo.root}/console/tenants/{demo.acme}/keys", form={"name": f"forged-{role}", "role": role, "csrf": csrf}
        )
        assert forged.status == 403, forged.text()
        assert f"Only an org-admin can issue {role} keys" in forged.text()
    listed = demo.admin.get(f"/tenants/{demo.acme}/keys")
    assert listed.status_code == 200 and not [k for k in listed.json()["data"] if k["name"].startswith("forged-")]
    # The roles it may grant still work from its form.
    page.fill("form[action$='/keys'] input[name=name]", "acme-console-member")
    page.select_option("form[action$='/keys'] select[name=role]", "member")
    page.click("form[action$='/keys'] button[type=submit]")
    expect(page.locator("section.secret")).to_be_visible()


def test_an_auditor_sees_the_audit_trail_only(demo, browser):
    made = demo.key(demo.globex, "globex-console-auditor", "auditor")
    page = login(browser, demo, made["key"])
    expect(page).to_have_url(re.compile(r"/console/audit$"))
    expect(page.locator("nav a")).to_have_text(["Audit"])
    expect(page.locator("tr.event").first).to_be_visible()
    assert page.goto(demo.root + "/console/overview").status == 403
    assert page.goto(f"{demo.root}/console/tenants/{demo.globex}").status == 403
    # Another tenant's trail, asked for by URL, is refused.
    assert page.goto(f"{demo.root}/console/audit?tenant={demo.acme}").status == 403
    page.goto(demo.root + "/console/audit")
    assert demo.acme not in page.locator("table").inner_text()


def test_a_member_key_cannot_log_in(demo, browser):
    member = demo.key(demo.acme, "plain-member")
    page = login(browser, demo, member["key"])
    expect(page.locator(".failed")).to_contain_text("no console role")
    assert page.context.cookies() == []
