"""`multihome tenants|teams|keys|policy|budgets|entitlements|stateful-pins|token-revocations|console-sessions|
mcp-servers|runs|usage`:
the admin API
from a shell.

Talks to a running gateway (`--url`, default $MULTIHOME_URL or http://127.0.0.1:4000) with an
admin credential (`--key`, default $MULTIHOME_ADMIN_KEY), so RBAC and the admin-event record
apply exactly as they do for any other client. Each command names the admin route it calls by its
name in the route registry (api/admin/registry.py, the handler's name); the method and path come
from the gateway's /admin/v1/openapi.json, which the registry generates (operationId = that name).
Tenants, teams and keys are given by name or id (a name is looked up with the resource's list).
Lists print a table for people; `--json` prints the API's JSON for scripts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ..policy.pins import WORK_KINDS
from .output import money, named, percent, print_json, table

DEFAULT_URL = "http://127.0.0.1:4000"
OPENAPI = "/admin/v1/openapi.json"  # the one admin path the CLI knows: the rest come from it


class Admin:
    """The admin API of one gateway, as the parsed arguments name it."""

    def __init__(self, args: argparse.Namespace) -> None:
        if not args.key:
            raise SystemExit(
                "no admin key: set MULTIHOME_ADMIN_KEY (or pass --key) to an org-admin, tenant-admin or auditor key"
            )
        self.url, self.key = args.url.rstrip("/"), args.key
        self._lists: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
        self._operations: dict[str, tuple[str, str]] | None = None

    def call(
        self,
        name: str,
        /,  # positional-only: a path parameter may be called `name` too (mcp-servers/{name})
        body: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
        **params: str | None,
    ) -> Any:
        """Call the admin operation `name` (a route's handler name in api/admin/), path parameters filled in."""
        method, template = self._operation(name)
        path = template.format(**{k: urllib.parse.quote(v, safe="") for k, v in params.items() if v is not None})
        query = {k: v for k, v in (query or {}).items() if v is not None}
        data = json.dumps(body).encode() if body is not None else None
        return self._request(method, path + (f"?{urllib.parse.urlencode(query)}" if query else ""), data)

    def _operation(self, name: str) -> tuple[str, str]:
        """(method, path template) of an operation, from the gateway's /admin/v1/openapi.json: the
        document the route registry generates, so the CLI types no admin path and needs none of the
        gateway's code (importing the registry would load the whole server: ~1 s per command)."""
        if self._operations is None:
            doc = self._request("GET", OPENAPI)
            self._operations = {
                op["operationId"]: (method.upper(), path)
                for path, ops in doc["paths"].items()
                for method, op in ops.items()
            }
        if name not in self._operations:
            raise SystemExit(f"the gateway at {self.url} has no admin operation {name} (an older version?)")
        return self._operations[name]

    def _request(self, method: str, path: str, data: bytes | None = None) -> Any:
        headers = {"authorization": f"Bearer {self.key}", "content-type": "application/json"}
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=15) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            try:
                message = json.load(exc)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = exc.reason
            raise SystemExit(f"error {exc.code}: {message}") from None
        except OSError as exc:
            raise SystemExit(f"cannot reach the gateway at {self.url}: {exc}") from None

    def listed(self, name: str, tenant: str | None = None) -> list[dict[str, Any]]:
        """The `data` of a list route (tenants, teams, keys), fetched once per command."""
        if (name, tenant) not in self._lists:
            self._lists[name, tenant] = self.every(name, tenant=tenant)["data"]
        return self._lists[name, tenant]

    def every(self, name: str, query: dict[str, Any] | None = None, **params: str | None) -> dict[str, Any]:
        """A list route's answer, every page of it: a list answered a page at a time (`has_more`, `last_id`:
        the keys) is read to its end, its pages' `data` and `unreadable` joined."""
        return self.walk(lambda after: self.call(name, None, {**(query or {}), "after": after}, **params))

    @staticmethod
    def walk(page_after: Callable[[str | None], dict[str, Any]], cursor: str = "last_id") -> dict[str, Any]:
        """Every page of a list answered a page at a time (`has_more`, and `cursor`: `last_id`, or a usage
        summary's `next_page`), `page_after(cursor)` reading one: their `data` and `unreadable` joined."""
        page = page_after(None)
        data, bad = list(page["data"]), list(page.get("unreadable", ()))
        while page.get("has_more") and page.get(cursor):
            page = page_after(page[cursor])
            data += page["data"]
            bad += page.get("unreadable", ())
        out = {k: v for k, v in page.items() if k not in ("has_more", cursor, "unreadable")}
        return {**out, "data": data, **({"unreadable": bad} if bad else {})}

    def names(self, name: str, tenant: str | None = None) -> dict[str, str]:
        return {item["id"]: item["name"] for item in self.listed(name, tenant)}

    def resolve(self, kind: str, value: str | None, tenant: str | None = None) -> str | None:
        """The id of the tenant / team / key given by id or name. An id this caller cannot list (another
        tenant's) is passed on as given, so the API answers for it (403 or 404)."""
        if value is None:
            return None
        list_name, prefix = _LISTS[kind]
        items = self.listed(list_name, tenant)
        found = [item["id"] for item in items if value in (item["id"], item.get("name"))]
        if len(found) == 1 or (not found and value.startswith(prefix)):
            return found[0] if found else value
        if found:
            raise SystemExit(f"{len(found)} {kind}s are named {value!r} ({', '.join(found)}): give the id")
        known = ", ".join(f"{item['name']} ({item['id']})" for item in items[:10]) or "none"
        raise SystemExit(f"no {kind} {value!r} (by name or id; known: {known})")

    def tenant(self, value: str | None) -> str | None:
        """The tenant's id. The static keys' tenant (`identity.static_keys_tenant`) is in no list: it is
        named by its id, which whoami gives."""
        if value is not None and not value.startswith(_LISTS["tenant"][1]):
            listed = self.listed("list_tenants")
            if not any(value in (item["id"], item.get("name")) for item in listed):
                if self.call("whoami").get("static_keys_tenant") == value:
                    return value
        return self.resolve("tenant", value)


# kind -> (the route that lists them, the prefix of their ids)
_LISTS = {"tenant": ("list_tenants", "ten_"), "team": ("list_teams", "team_"), "key": ("list_keys", "key_")}


def _fetch(a: argparse.Namespace, api: Admin, name: str, query: dict[str, Any] | None = None) -> list[Any] | None:
    """The rows of list route `name` (for --tenant when the command takes one); with --json, print the
    API's answer instead and return None."""
    out = api.every(name, query=query, tenant=api.tenant(getattr(a, "tenant", None)))
    if a.json:
        print_json(out)
        return None
    bad = out.get("unreadable") or ()
    if bad:  # rows the gateway cannot read are left out of `data` (docs/storage.md): say which, on stderr
        print(f"{len(bad)} stored row(s) cannot be read and are not listed (docs/storage.md):", file=sys.stderr)
        for row in bad:
            print(f"  {row['table']} {row['id']}: {row['problem']}", file=sys.stderr)
    return out["data"]


# -- tenants and teams ---------------------------------------------------------------------------
def _tenants_list(a: argparse.Namespace, api: Admin) -> None:
    _names_table(_fetch(a, api, "list_tenants"))


def _names_table(data: list[Any] | None) -> None:
    """Tenants or teams: id, name, the day it was made."""
    if data is not None:
        print(table(["id", "name", "created"], [(t["id"], t["name"], _day(t["created_at"])) for t in data]), end="")


def _tenants_create(a: argparse.Namespace, api: Admin) -> None:
    out = api.call("create_tenant", {"name": a.name})
    _done(a, out, f"created tenant {out['name']}: {out['id']}")


def _teams_list(a: argparse.Namespace, api: Admin) -> None:
    _names_table(_fetch(a, api, "list_teams"))


def _teams_create(a: argparse.Namespace, api: Admin) -> None:
    out = api.call("create_team", {"name": a.name}, tenant=api.tenant(a.tenant))
    _done(a, out, f"created team {out['name']} in tenant {out['tenant_id']}: {out['id']}")


# -- keys ----------------------------------------------------------------------------------------
def _keys_list(a: argparse.Namespace, api: Admin) -> None:
    data = _fetch(a, api, "list_keys")
    if data is None:
        return
    teams = api.names("list_teams", api.tenant(a.tenant)) if any(k["team_id"] for k in data) else {}
    rows = [
        (
            k["id"],
            k["name"],
            k["prefix"],
            named(k["team_id"], teams),
            ",".join(k["roles"]),
            _day(k["expires_at"]) or "never",
            "revoked" if k["revoked_at"] else "active",
        )
        for k in data
    ]
    print(table(["id", "name", "prefix", "team", "roles", "expires", "status"], rows), end="")


def _keys_create(a: argparse.Namespace, api: Admin) -> None:
    tenant = api.tenant(a.tenant)
    body: dict[str, Any] = {"name": a.name, "roles": a.roles or ["member"]}
    if a.team:
        body["team_id"] = api.resolve("team", a.team, tenant)
    if a.models:
        body["scopes_models"] = a.models
    if a.expires_in_days is not None:
        body["expires_in_days"] = a.expires_in_days
    out = api.call("create_key", body, tenant=tenant)
    if a.json:
        print_json(out)
        return
    print(f"created {out['id']} ({', '.join(out['roles'])})")
    print(f"key (shown once, store it now): {out['key']}")


def _keys_revoke(a: argparse.Namespace, api: Admin) -> None:
    tenant = api.tenant(a.tenant)
    print_json(api.call("revoke_key", tenant=tenant, id=api.resolve("key", a.key_id, tenant)))


# -- policies ------------------------------------------------------------------------------------
def _policy_list(a: argparse.Namespace, api: Admin) -> None:
    data = _fetch(a, api, "list_policies")
    if data is None:
        return
    names = _scope_names(api, api.tenant(a.tenant), data)
    rows = [
        (
            p["id"],
            p["scope"],
            named(p["scope_id"], names),
            rule_count(p["rules"]),
            p.get("set_by_role", ""),
            p["description"],
        )
        for p in data
    ]
    print(table(["id", "scope", "applies to", "rules", "set by", "description"], rows), end="")


def rule_count(rules: object) -> int | str:
    """A listed policy's egress rules, counted; a stored value the gateway cannot read (a hand edit,
    whose tenant's calls it refuses, docs/policy.md) is listed as such, so the admin sees what to fix."""
    egress = rules.get("egress", []) if isinstance(rules, dict) else None
    return len(egress) if isinstance(egress, list) else "unreadable"


def _policy_create(a: argparse.Namespace, api: Admin) -> None:
    out = api.call("create_policy", _json_arg(a.body), tenant=api.tenant(a.tenant))
    _done(
        a,
        out,
        f"created policy {out['id']} ({out['scope']} {out['scope_id']}, {len(out['rules'].get('egress', []))} rules)",
    )


def _policy_update(a: argparse.Namespace, api: Admin) -> None:
    body = _json_arg(a.body) if a.body else {}
    if a.description is not None:
        body["description"] = a.description
    if not body:
        raise SystemExit("policy update: give the new rules (JSON or @file.json) and/or --description")
    out = api.call("update_policy", body, tenant=api.tenant(a.tenant), id=a.policy_id)
    _done(a, out, f"updated policy {out['id']} ({len(out['rules'].get('egress', []))} rules)")


def _policy_delete(a: argparse.Namespace, api: Admin) -> None:
    print_json(api.call("delete_policy", tenant=api.tenant(a.tenant), id=a.policy_id))


def _explain(a: argparse.Namespace, api: Admin) -> None:
    tenant = api.tenant(a.tenant)
    body = {"tenant_id": tenant, "model": a.model, "endpoint": a.endpoint}
    if a.key_id:
        body["key_id"] = api.resolve("key", a.key_id, tenant)
    if a.team:
        body["team_id"] = api.resolve("team", a.team, tenant)
    out = api.call("explain", body)
    if a.json:
        print_json(out)
        return
    print(("allowed: " if out["allowed"] else "denied: ") + (out.get("message") or ", ".join(out["deployments"])))
    for name, why in sorted(out.get("denied", {}).items()):
        print(f"  x {name}: {why}")


# -- budgets -------------------------------------------------------------------------------------
def _budgets_list(a: argparse.Namespace, api: Admin) -> None:
    tenant = api.tenant(a.tenant)
    data = _fetch(
        a,
        api,
        "list_budgets",
        {"team": api.resolve("team", a.team, tenant), "key": api.resolve("key", a.key_id, tenant)},
    )
    if data is None:
        return
    names = _scope_names(api, tenant, data)
    rows: list[list[Any]] = [
        [
            b["id"] or "(config)",
            b["scope"],
            named(b["scope_id"], names),
            b["period"],
            b["mode"],
            money(b["spent_or_reserved"], b["currency"]),
            money(b["amount"], b["currency"]),
            percent(b["spent_or_reserved"], b["amount"]),
            money(b["remaining"], b["currency"]),
            b.get("set_by_role") or "config",
            "" if b.get("in_force", True) else "outranked by a smaller budget",
        ]
        for b in data
    ]
    headers = ["id", "scope", "applies to", "period", "mode", "spent", "limit", "used", "remaining", "set by", "note"]
    if not any(row[-1] for row in rows):  # the note column only when a budget is outranked
        headers, rows = headers[:-1], [row[:-1] for row in rows]
    print(table(headers, rows), end="")


def _budgets_create(a: argparse.Namespace, api: Admin) -> None:
    tenant = api.tenant(a.tenant)
    body = {"scope": a.scope, "amount": a.amount, "currency": a.currency, "period": a.period, "mode": a.mode}
    if a.scope_id:
        body["scope_id"] = api.resolve(a.scope, a.scope_id, tenant) if a.scope != "tenant" else api.tenant(a.scope_id)
    out = api.call("create_budget", body, tenant=tenant)
    _done(a, out, f"created budget {out['id']}: {_budget_text(out)} on {out['scope']} {out['scope_id']}")


def _budgets_update(a: argparse.Namespace, api: Admin) -> None:
    body = {k: v for k, v in (("amount", a.amount), ("mode", a.mode)) if v is not None}
    out = api.call("update_budget", body, tenant=api.tenant(a.tenant), id=a.budget_id)
    _done(a, out, f"updated budget {out['id']}: {_budget_text(out)}")


def _budgets_delete(a: argparse.Namespace, api: Admin) -> None:
    print_json(api.call("delete_budget", tenant=api.tenant(a.tenant), id=a.budget_id))


def _budget_text(b: dict[str, Any]) -> str:
    per = "in total" if b["period"] == "total" else f"per {b['period']}"
    return f"{money(b['amount'], b['currency'])} {per}, {b['mode']}"


# -- entitlements --------------------------------------------------------------------------------
def _entitlements_list(a: argparse.Namespace, api: Admin) -> None:
    data = _fetch(a, api, "list_entitlements")
    if data is None:
        return
    today = dt.date.today().isoformat()
    rows = [
        (
            e["id"],
            e["model_group"],
            e["starts_on"],
            e["ends_on"],
            "yes" if e["exclusive"] else "no",
            _entitlement_status(e, today),
            e["note"],
        )
        for e in data
    ]
    print(table(["id", "model group", "from", "to", "exclusive", "status", "note"], rows), end="")


def _entitlement_status(e: dict[str, Any], today: str) -> str:
    if e["revoked_at"]:
        return "revoked"
    return "upcoming" if today < e["starts_on"] else "ended" if today > e["ends_on"] else "active"


def _grant(a: argparse.Namespace, api: Admin) -> None:
    body = {"model_group": a.model, "starts_on": a.starts_on, "ends_on": a.ends_on, "exclusive": a.exclusive}
    out = api.call("grant_entitlement", body, tenant=api.tenant(a.tenant))
    _done(
        a,
        out,
        f"granted {out['model_group']} to tenant {out['tenant_id']} from {out['starts_on']} to "
        f"{out['ends_on']}{' (exclusive)' if out['exclusive'] else ''}: {out['id']}",
    )


def _entitlements_revoke(a: argparse.Namespace, api: Admin) -> None:
    print_json(api.call("revoke_entitlement", tenant=api.tenant(a.tenant), id=a.entitlement_id))


# -- stateful-work pins --------------------------------------------------------------------------
def _pins_list(a: argparse.Namespace, api: Admin) -> None:
    data = _fetch(a, api, "list_stateful_pins")
    if data is None:
        return
    now = dt.datetime.now(dt.UTC)
    rows = [
        (
            p["id"],
            ", ".join(p["providers"] or ["any"]),
            ", ".join(p["data_zones"] or ["any"]),
            ", ".join(p["work"] or ["all"]),
            p["valid_from"],
            p["valid_until"] or "-",
            _pin_status(p, now),
            p["note"],
        )
        for p in data
    ]
    print(table(["id", "providers", "data zones", "work", "from", "until", "status", "note"], rows), end="")


def _pin_status(p: dict[str, Any], now: dt.datetime) -> str:
    if p["revoked_at"]:
        return "revoked"
    if now < dt.datetime.fromisoformat(p["valid_from"]):
        return "upcoming"
    return "ended" if p["valid_until"] and now >= dt.datetime.fromisoformat(p["valid_until"]) else "active"


def _pins_create(a: argparse.Namespace, api: Admin) -> None:
    body = {
        "providers": a.provider or None,
        "data_zones": a.zone or None,
        "work": a.work or None,
        "valid_from": a.valid_from,
        "valid_until": a.valid_until,
        "note": a.note,
    }
    out = api.call("create_stateful_pin", {k: v for k, v in body.items() if v is not None}, tenant=api.tenant(a.tenant))
    where = "; ".join(
        f"{label} {', '.join(out[key])}"
        for key, label in (("providers", "providers"), ("data_zones", "data zones"))
        if out[key]
    )
    _done(a, out, f"pinned tenant {out['tenant_id']}'s stateful work to {where}: {out['id']}")


def _pins_revoke(a: argparse.Namespace, api: Admin) -> None:
    print_json(api.call("revoke_stateful_pin", tenant=api.tenant(a.tenant), id=a.pin_id))


# -- token revocations ---------------------------------------------------------------------------
def _time_arg(value: str | None) -> str | int | None:
    """RFC 3339 text as given, or epoch seconds as a number (a token's exp/iat)."""
    if value is None:
        return None
    return int(value) if value.strip().isdigit() else value


def _create_revocation(a: argparse.Namespace, api: Admin) -> None:
    body: dict[str, Any] = {"kind": "jti" if a.jti else "subject", "issuer": a.issuer, "reason": a.reason}
    for name, value in (
        ("jti", a.jti),
        ("subject", a.subject),
        ("issuer", a.issuer),
        ("tenant_id", api.tenant(a.tenant)),
        ("not_before", _time_arg(a.not_before)),
        ("expires_at", _time_arg(a.expires_at)),
    ):
        if value is not None:
            body[name] = value
    out = api.call("create_token_revocation", body)
    if a.json:
        print_json(out)
        return
    what = f"jti {out['jti']}" if out["kind"] == "jti" else f"subject {out['subject']} (iat <= {out['not_before']})"
    scope = f"tenant {out['tenant_id']}" if out["tenant_id"] else "every tenant"
    print(
        f"revoked {what} of {out['issuer_name'] or out['issuer']}: {out['id']}"
        f" ({scope}, until {out['expires_at'] or 'deleted'})"
    )


def _list_revocations(a: argparse.Namespace, api: Admin) -> None:
    query = {
        "tenant": api.tenant(a.tenant),
        "kind": a.kind,
        "issuer": a.issuer,
        "subject": a.subject,
        "live": "true" if a.live else None,
    }
    out = api.every("list_token_revocations", query)
    if a.json:
        print_json(out)
        return
    rows = [
        (
            r["id"],
            r["issuer_name"] or r["issuer"],
            f"jti={r['jti']}" if r["kind"] == "jti" else f"sub={r['subject']} iat<={r['not_before']}",
            r["tenant_id"] or "(every tenant)",
            r["expires_at"] or "-",
            "live" if r["live"] else "expired",
            r["reason"],
        )
        for r in out["data"]
    ]
    print(table(["id", "issuer", "revokes", "tenant", "until", "status", "reason"], rows), end="")


def _delete_revocation(a: argparse.Namespace, api: Admin) -> None:
    print_json(api.call("delete_token_revocation", id=a.revocation_id))


# -- console sessions (docs/console.md "Ending sessions") -----------------------------------------------
def _end_console_sessions(a: argparse.Namespace, api: Admin) -> None:
    body: dict[str, Any] = {"reason": a.reason}
    for name, value in (
        ("subject", a.subject),
        ("issuer", a.issuer),
        ("tenant_id", api.tenant(a.tenant)),
        ("not_before", _time_arg(a.not_before)),
    ):
        if value is not None:
            body[name] = value
    out = api.call("end_console_sessions", body)
    if a.json:
        print_json(out)
        return
    who = f"subject {out['subject']}" if out["subject"] else "every subject"
    if out["subject"] and out.get("issuer") not in (None, "api_key", "static"):
        who += f" of {out.get('issuer_name') or out['issuer']}"
    scope = f"tenant {out['tenant_id']}" if out["tenant_id"] else "every tenant"
    print(f"ended the console sessions of {who} ({scope}) issued at or before {out['not_before']}: {out['id']}")


def _list_console_session_ends(a: argparse.Namespace, api: Admin) -> None:
    out = api.every("list_console_session_ends", {"tenant": api.tenant(a.tenant)})
    if a.json:
        print_json(out)
        return
    rows = [
        (
            r["id"],
            r["kind"],
            r["subject"] or "(every subject)",
            r.get("issuer_name") or r.get("issuer") or ("(any)" if r["kind"] == "subject" else "-"),
            r["tenant_id"] or "(every tenant)",
            r["not_before"] or "-",
            r["expires_at"],
            r["actor"],
            r["reason"],
        )
        for r in out["data"]
    ]
    headers = ["id", "kind", "subject", "issuer", "tenant", "issued up to", "kept until", "by", "reason"]
    print(table(headers, rows), end="")


# -- provider credentials and captures (docs/encryption.md) -------------------------------------------
def _credentials_list(a: argparse.Namespace, api: Admin) -> None:
    out = api.call("list_provider_credentials")
    if a.json:
        print_json(out)
        return
    rows = [
        (
            r["id"],
            r["api_key_from"],
            ("set" + (f" (…{r['fingerprint']})" if r.get("fingerprint") else "")) if r["set"] else "-",
            str(r.get("version") or "-"),
            r.get("updated_at") or "-",
            r.get("updated_by") or "-",
        )
        for r in out["data"]
    ]
    print(table(["provider", "key from", "stored key", "version", "updated", "by"], rows), end="")


def _credentials_set(a: argparse.Namespace, api: Admin) -> None:
    # From stdin, never argv: a command line is visible to every user of the machine (ps, /proc).
    if sys.stdin.isatty():
        import getpass

        secret = getpass.getpass(f"API key for provider {a.provider}: ")
    else:
        secret = sys.stdin.readline()
    secret = secret.strip()
    if not secret:
        raise SystemExit("provider-credentials set: no API key on stdin")
    out = api.call("set_provider_credential", {"api_key": secret}, provider=a.provider)
    if a.json:
        print_json(out)
        return
    print(f"stored the API key of {out['id']} (version {out['version']}), sealed; in use from the next call")


def _credentials_delete(a: argparse.Namespace, api: Admin) -> None:
    print_json(api.call("delete_provider_credential", provider=a.provider))


def _captures_list(a: argparse.Namespace, api: Admin) -> None:
    print_json(api.call("list_captures", query={"limit": a.limit, "after": a.after}, tenant=api.tenant(a.tenant)))


# -- MCP servers (docs/agents.md) --------------------------------------------------------------------
def _mcp_list(a: argparse.Namespace, api: Admin) -> None:
    data = _fetch(a, api, "list_mcp_servers")
    if data is not None:
        rows = [
            (
                s["name"],
                s["url"],
                ", ".join(s["allowed_tools"]) if s["allowed_tools"] is not None else "all",
                s["require_approval"] if isinstance(s["require_approval"], str) else json.dumps(s["require_approval"]),
                ", ".join(s["header_names"]) or "-",
                _day(s["updated_at"]),
            )
            for s in data
        ]
        print(table(["name", "url", "tools", "approval", "headers", "updated"], rows), end="")


def _mcp_headers(a: argparse.Namespace) -> dict[str, str] | None:
    """Header values from environment variables (--header-env NAME=VAR) and/or stdin (--headers-stdin:
    `Name: value` lines), never from argv: a command line is visible to every user of the machine."""
    if a.no_headers:
        return {}
    headers: dict[str, str] = {}
    for item in a.header_env or []:
        name, _, var = item.partition("=")
        if not name or not var:
            raise SystemExit(f"--header-env {item}: give NAME=ENVVAR (the header's value is read from $ENVVAR)")
        if var not in os.environ:
            raise SystemExit(f"--header-env {item}: ${var} is not set")
        headers[name.strip()] = os.environ[var]
    if a.headers_stdin:
        for line in sys.stdin.read().splitlines():
            if line.strip():
                name, sep, value = line.partition(":")
                if not sep or not name.strip():
                    raise SystemExit("--headers-stdin: each line is `Name: value`")
                headers[name.strip()] = value.strip()
    return headers if (a.header_env or a.headers_stdin) else None


def _mcp_body(a: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if a.server_url is not None:
        body["url"] = a.server_url
    if a.description is not None:
        body["description"] = a.description
    if a.all_tools:
        body["allowed_tools"] = None
    elif a.allowed_tools:
        body["allowed_tools"] = a.allowed_tools
    if a.require_approval is not None:
        rule = a.require_approval
        body["require_approval"] = rule if rule in ("always", "never") else _json_arg(rule)
    headers = _mcp_headers(a)
    if headers is not None:
        body["headers"] = headers
    return body


def _mcp_add(a: argparse.Namespace, api: Admin) -> None:
    out = api.call("create_mcp_server", {"name": a.name, **_mcp_body(a)}, tenant=api.tenant(a.tenant))
    _done(
        a,
        out,
        f"registered MCP server {out['name']} at {out['url']} (headers: {', '.join(out['header_names']) or 'none'})",
    )


def _mcp_update(a: argparse.Namespace, api: Admin) -> None:
    body = _mcp_body(a)
    if not body:
        raise SystemExit("mcp-servers update: nothing to change (see --help)")
    out = api.call("update_mcp_server", body, tenant=api.tenant(a.tenant), name=a.name)
    _done(a, out, f"updated MCP server {out['name']}")


def _mcp_remove(a: argparse.Namespace, api: Admin) -> None:
    out = api.call("delete_mcp_server", tenant=api.tenant(a.tenant), name=a.name)
    _done(a, out, f"removed MCP server {a.name}")


# -- agent runs (docs/agents.md) ----------------------------------------------------------------------
def _runs_list(a: argparse.Namespace, api: Admin) -> None:
    data = _fetch(a, api, "list_agent_runs", {"limit": a.limit, "after": a.after})
    if data is not None:
        rows = [
            (
                r["id"],
                r["status"],
                time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["created_at"])),
                ", ".join(r["servers"]),
                str(r["steps"]),
                str(r["tool_calls"]),
                r["spent"],
                (r["job"] or {}).get("status", "-"),
            )
            for r in data
        ]
        print(table(["run", "status", "created (UTC)", "servers", "steps", "tool calls", "spent", "job"], rows), end="")


def _runs_show(a: argparse.Namespace, api: Admin) -> None:
    print_json(api.call("get_agent_run", tenant=api.tenant(a.tenant), id=a.id))


def _runs_cancel(a: argparse.Namespace, api: Admin) -> None:
    out = api.call("cancel_agent_run", tenant=api.tenant(a.tenant), id=a.id)
    _done(a, out, f"run {a.id}: {out['status']}")


# -- usage ---------------------------------------------------------------------------------------
def _usage(a: argparse.Namespace, api: Admin) -> None:
    tenant = api.tenant(a.tenant)
    query = {"group_by": a.by, "start": _day_start(a.since, "--from"), "end": _day_start(a.until, "--to", 1)}
    query["interval"] = a.per

    def page(after: str | None) -> dict[str, Any]:
        asked = {**query, "page": after}
        return api.call("tenant_usage", query=asked, tenant=tenant) if tenant else api.call("org_usage", query=asked)

    out = api.walk(page, "next_page")  # every page: a tenant's keys are an entry each
    if a.json:
        print_json(out)
        return
    by = out["group_by"]
    lists = {"tenant": "list_tenants", **({"key": "list_keys", "team": "list_teams"} if tenant else {})}
    names = api.names(lists[by], None if by == "tenant" else tenant) if by in lists else {}
    period = f"{a.since or 'the beginning'} to {a.until or 'now'}"
    print(
        f"spend by {by.replace('_', ' ')}"
        + (f" in tenant {named(tenant, api.names('list_tenants'))}" if tenant else " across tenants")
        + f", {period}"
    )
    # Biggest cost first (within an hour or day, oldest first): the answer is in order of group, to be paged.
    out["data"].sort(key=lambda e: (e.get("bucket", ""), -Decimal(e["cost"])))
    per = [e["bucket"] for e in out["data"]] if a.per else None
    rows = [
        (
            *([per[i]] if per else []),
            # across tenants, a team or key is named with its tenant (two tenants may both have a team `ml`)
            f"{e['tenant_id']}/{named(e[by], names)}" if "tenant_id" in e else named(e[by], names),
            e["calls"],
            e["errors"],
            e.get("unserved", 0),  # upstream answers billed and not served (docs/metering.md)
            e["prompt_tokens"],
            e["completion_tokens"],
            e.get("reasoning_tokens", 0),
            money(e["cost"], e["currency"], 4),
        )
        for i, e in enumerate(out["data"])
    ]
    headers = [*([a.per] if a.per else []), by.replace("_", " "), "calls", "errors", "unserved"]
    headers += ["input tokens", "output tokens"]
    headers.append("of which reasoning")  # reasoning tokens are output tokens: counted in the column before
    print(table([*headers, "cost"], rows), end="")


def _day_start(value: str | None, flag: str, plus_days: int = 0) -> str | None:
    """YYYY-MM-DD as the UTC midnight that starts it (`plus_days` later: an inclusive end date)."""
    if value is None:
        return None
    try:
        day = dt.date.fromisoformat(value) + dt.timedelta(days=plus_days)
    except ValueError:
        raise SystemExit(f"{flag} {value}: give a date, YYYY-MM-DD") from None
    return f"{day.isoformat()}T00:00:00Z"


# -- helpers -------------------------------------------------------------------------------------
def _scope_names(api: Admin, tenant: str | None, items: list[dict[str, Any]]) -> dict[str, str]:
    """Names of the tenant, teams and keys that budgets or policies apply to."""
    scopes = {item["scope"] for item in items}
    names = api.names("list_tenants") if "tenant" in scopes else {}
    if "team" in scopes:
        names.update(api.names("list_teams", tenant))
    if "key" in scopes:
        names.update(api.names("list_keys", tenant))
    return names


def _done(a: argparse.Namespace, out: Any, line: str) -> None:
    """What a change prints: a short line for people, the API's JSON with --json."""
    if a.json:
        print_json(out)
    else:
        print(line)


def _day(value: str | None) -> str:
    return value[:10] if value else ""


def _json_arg(value: str) -> dict[str, Any]:
    if value.startswith("@"):
        with open(value[1:]) as f:
            return json.load(f)
    return json.loads(value)


def _common(p: argparse.ArgumentParser, *, tenant: bool | None = True) -> argparse.ArgumentParser:
    """The flags every admin command takes; `tenant`: --tenant required (True), optional (None), or absent."""
    p.add_argument(
        "--url",
        default=os.environ.get("MULTIHOME_URL", DEFAULT_URL),
        help=f"the gateway's base URL (default: $MULTIHOME_URL, else {DEFAULT_URL})",
    )
    p.add_argument(
        "--key",
        default=os.environ.get("MULTIHOME_ADMIN_KEY", ""),
        help="admin credential: an org-admin, tenant-admin or auditor key (default: $MULTIHOME_ADMIN_KEY)",
    )
    p.add_argument("--json", action="store_true", help="print the API's JSON (for scripts)")
    if tenant is not False:
        p.add_argument("--tenant", required=bool(tenant), help="tenant name or id")
    return p


def _run(func: Any) -> Any:
    return lambda a: func(a, Admin(a))


def add_commands(sub: argparse._SubParsersAction) -> None:
    def group(name: str, help_: str) -> argparse._SubParsersAction:
        return sub.add_parser(name, help=help_).add_subparsers(dest="action", required=True)

    def command(
        parent: argparse._SubParsersAction,
        name: str,
        func: Any,
        help_: str | None = None,
        tenant: bool | None = True,
    ) -> argparse.ArgumentParser:
        c = _common(parent.add_parser(name, help=help_), tenant=tenant)
        c.set_defaults(func=_run(func))
        return c

    t = group("tenants", "manage tenants")
    command(t, "list", _tenants_list, "tenants you can see", tenant=False)
    command(t, "create", _tenants_create, tenant=False).add_argument("name")

    tm = group("teams", "manage teams")
    command(tm, "list", _teams_list)
    command(tm, "create", _teams_create).add_argument("name")

    k = group("keys", "manage API keys")
    command(k, "list", _keys_list)
    c = command(k, "create", _keys_create, "create a key; the secret is printed once")
    c.add_argument("--name", required=True)
    c.add_argument("--team", help="team name or id")
    c.add_argument(
        "--role",
        action="append",
        dest="roles",
        help="repeatable (default: member; auditor and org-admin: an org-admin key only)",
    )
    c.add_argument(
        "--model", action="append", dest="models", help="limit to model groups or family globs (gpt-4o*; repeatable)"
    )
    c.add_argument("--expires-in-days", type=float)
    command(k, "revoke", _keys_revoke).add_argument("key_id", help="key name or id")

    p = group("policy", "egress/residency policies")
    command(p, "list", _policy_list)
    command(p, "create", _policy_create, "create a policy from a JSON file or string").add_argument(
        "body", help='JSON ({"scope": "tenant", "rules": [...]}) or @file.json'
    )
    c = command(p, "update", _policy_update, "replace a policy's rules and/or description")
    c.add_argument("policy_id")
    c.add_argument("body", nargs="?", help='the new rules as JSON ({"rules": [...]}) or @file.json')
    c.add_argument("--description")
    command(p, "delete", _policy_delete).add_argument("policy_id")
    c = command(p, "explain", _explain, "the decision for a caller and model, rule by rule")
    c.add_argument("--model", required=True)
    c.add_argument("--key-id", help="API key name or id")
    c.add_argument("--team", help="team name or id")
    c.add_argument("--endpoint", default="chat")

    b = group("budgets", "spend budgets per tenant, team or key")
    c = command(b, "list", _budgets_list, "budgets that apply, with what is spent or reserved")
    c.add_argument("--team", help="also the budgets of this team (name or id)")
    c.add_argument("--api-key", dest="key_id", help="also the budgets of this API key (name or id)")
    c = command(b, "create", _budgets_create)
    c.add_argument("--scope", choices=["tenant", "team", "key"], default="tenant")
    c.add_argument("--id", dest="scope_id", help="the team or key, name or id (scope team or key)")
    c.add_argument("--amount", required=True, help="e.g. 250.00")
    c.add_argument("--currency", default="USD")
    c.add_argument("--period", choices=["day", "month", "total"], default="month")
    c.add_argument("--mode", choices=["hard", "soft"], default="hard", help="hard refuses calls; soft only flags them")
    c = command(b, "update", _budgets_update, "change the amount and/or mode; what was spent is kept")
    c.add_argument("budget_id")
    c.add_argument("--amount")
    c.add_argument("--mode", choices=["hard", "soft"])
    command(b, "delete", _budgets_delete).add_argument("budget_id")

    e = group("entitlements", "model licences")
    command(e, "list", _entitlements_list)
    c = command(e, "grant", _grant)
    c.add_argument("--model", required=True)
    c.add_argument("--from", dest="starts_on", required=True, help="YYYY-MM-DD (inclusive)")
    c.add_argument("--to", dest="ends_on", required=True, help="YYYY-MM-DD (inclusive)")
    c.add_argument("--exclusive", action="store_true")
    command(e, "revoke", _entitlements_revoke).add_argument("entitlement_id")

    p = group("stateful-pins", "where a tenant's stateful work may be hosted (docs/policy.md)")
    command(p, "list", _pins_list)
    c = command(p, "create", _pins_create, "pin background responses, agent steps, stored turns, memory embeddings")
    c.add_argument("--provider", action="append", help="a provider name (repeat for more)")
    c.add_argument("--zone", action="append", help="a data zone (repeat for more)")
    c.add_argument("--work", action="append", choices=list(WORK_KINDS), help="only this kind (repeat; default all)")
    c.add_argument("--from", dest="valid_from", help="RFC 3339 time (default now)")
    c.add_argument("--until", dest="valid_until", help="RFC 3339 time (default until revoked)")
    c.add_argument("--note", default="")
    command(p, "revoke", _pins_revoke).add_argument("pin_id")

    r = group("token-revocations", "refuse OIDC tokens before their exp (docs/oidc.md)")
    c = command(r, "list", _list_revocations, "token revocations (org-admin: all; others: their tenant's)", None)
    c.add_argument("--kind", choices=["jti", "subject"])
    c.add_argument("--issuer", help="an identity.oidc issuer name or exact iss")
    c.add_argument("--subject")
    c.add_argument("--live", action="store_true", help="only those not yet expired")
    c = command(r, "create", _create_revocation, "revoke one token (--jti) or a subject's tokens (--subject)", None)
    c.add_argument("--issuer", required=True, help="the identity.oidc issuer name, or its exact iss")
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--jti", help="revoke the one token with this jti claim")
    who.add_argument("--subject", help="revoke every token of this subject issued at or before --not-before")
    c.add_argument(
        "--not-before",
        help="subject: refuse tokens with iat at or before this (RFC 3339 or epoch seconds; default now)",
    )
    c.add_argument(
        "--expires-at",
        help="when the revocation may be forgotten (RFC 3339 or epoch seconds); for "
        "--jti give the token's exp (default: the issuer's max_token_lifetime_s from now)",
    )
    c.add_argument("--reason", default="", help="free text, shown in lists and the change record (not secret)")
    command(
        r, "delete", _delete_revocation, "lift a revocation: the tokens it refused work again", tenant=False
    ).add_argument("revocation_id")

    cs = group("console-sessions", "end console sessions on every replica (docs/console.md)")
    command(
        cs, "list", _list_console_session_ends, "logouts and cut-offs still in force (tenant-admin: its tenant's)", None
    )
    c = command(cs, "end", _end_console_sessions, "end a subject's (org-admin: or everyone's) console sessions", None)
    c.add_argument("--subject", help="a viewer's subject: an API key's id, or a token's subject (default: everyone)")
    c.add_argument("--issuer", help="a token subject's issuer: its identity.oidc name or exact iss (not for a key)")
    c.add_argument(
        "--not-before", help="sessions issued at or before this end (RFC 3339 or epoch seconds; default now)"
    )
    c.add_argument("--reason", default="", help="free text, shown in lists and the change record (not secret)")

    pc = group("provider-credentials", "provider API keys kept sealed in the database (auth.api_key_from: store)")
    command(pc, "list", _credentials_list, "every provider: is its key stored here, set, when (never the key)", False)
    c = command(pc, "set", _credentials_set, "set or rotate a provider's API key, read from stdin (never argv)", False)
    c.add_argument("provider", help="the provider's name in the config")
    command(pc, "delete", _credentials_delete, "delete a provider's stored API key", False).add_argument("provider")

    cp = group("captures", "captured prompts and answers (capture.tenants; the tenant's auditor only)")
    c = command(cp, "list", _captures_list, "captured calls, oldest first, as JSON")
    c.add_argument("--limit", help="1-100 (default 20)")
    c.add_argument("--after", help="the id of the last capture seen")

    ms = group("mcp-servers", "MCP servers a tenant's requests may reach (docs/agents.md)")
    command(ms, "list", _mcp_list, "the tenant's MCP servers (header names, never values)")
    for action, func, help_ in (
        ("add", _mcp_add, "register an MCP server; header values from env vars or stdin, never argv"),
        ("update", _mcp_update, "change an MCP server; headers given replace the whole set"),
    ):
        c = command(ms, action, func, help_)
        c.add_argument("name")
        c.add_argument("--server-url", required=action == "add", help="http(s) URL of its MCP endpoint")
        c.add_argument("--description")
        c.add_argument("--allowed-tool", action="append", dest="allowed_tools", help="repeatable (default: all)")
        c.add_argument("--all-tools", action="store_true", help="allow every tool the server lists")
        c.add_argument("--require-approval", help='always (default), never, or JSON ({"never": {"tool_names": [...]}})')
        c.add_argument(
            "--header-env", action="append", metavar="NAME=ENVVAR", help="a header whose value is $ENVVAR (repeatable)"
        )
        c.add_argument("--headers-stdin", action="store_true", help="read `Name: value` header lines from stdin")
        c.add_argument("--no-headers", action="store_true", help="send no headers (update: remove them all)")
    command(ms, "remove", _mcp_remove, "remove an MCP server: requests can no longer reach it").add_argument("name")

    rn = group("runs", "agent runs: background responses with mcp tools (docs/agents.md)")
    c = command(rn, "list", _runs_list, "the tenant's agent runs, newest first (never content)")
    c.add_argument("--limit", help="1-100 (default 20)")
    c.add_argument("--after", help="the id of the last run seen")
    command(rn, "show", _runs_show, "one run with its steps from the audit trail, as JSON").add_argument("id")
    command(rn, "cancel", _runs_cancel, "cancel a run: it stops at its next checkpoint").add_argument("id")

    u = _common(
        sub.add_parser("usage", help="spend and tokens by tenant, key, team, model group or deployment"), tenant=None
    )
    u.add_argument(
        "--by",
        choices=["tenant", "key", "team", "model_group", "deployment"],
        help="group by (default: model_group with --tenant, else tenant)",
    )
    u.add_argument("--from", dest="since", metavar="YYYY-MM-DD", help="first day (UTC, inclusive; default: all)")
    u.add_argument("--to", dest="until", metavar="YYYY-MM-DD", help="last day (UTC, inclusive; default: today)")
    u.add_argument("--per", choices=["hour", "day"], help="one row per hour or day (UTC) and group, oldest first")
    u.set_defaults(func=_run(_usage))
