"""`multihome tenants|teams|keys|budgets|policy|entitlements|token-revocations`: the admin API from a shell.

Talks to a running gateway (`--url`, default $MULTIHOME_URL or http://127.0.0.1:4000) with an
admin credential (`--key`, default $MULTIHOME_ADMIN_KEY), so RBAC and the admin-event record
apply exactly as they do for any other client.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request


def _call(args, name: str, body: dict | None = None, query: dict | None = None, **params: str) -> dict:
    """Call the admin route named `name` (its handler's name in api/admin/), path parameters filled in."""
    if not args.key:
        raise SystemExit("no admin key: set MULTIHOME_ADMIN_KEY (or pass --key) to an org-admin, tenant-admin or auditor key")
    from ..api.admin.registry import route

    r = route(name)
    method = r.method
    query = {k: v for k, v in (query or {}).items() if v is not None}
    url = args.url.rstrip("/") + r.url(**params) + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = json.dumps(body).encode() if body is not None else None
    headers = {"authorization": f"Bearer {args.key}", "content-type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            message = json.load(exc)["error"]["message"]
        except (ValueError, KeyError):
            message = exc.reason
        raise SystemExit(f"error {exc.code}: {message}") from None
    except OSError as exc:
        raise SystemExit(f"cannot reach the gateway at {args.url}: {exc}") from None


def _print(obj, args) -> None:
    if args.json or not isinstance(obj, dict) or obj.get("object") != "list":
        print(json.dumps(obj, indent=2, default=str))
        return
    for item in obj["data"]:
        fields = [str(item.get(k)) for k in ("id", "name", "model_group", "scope", "prefix", "action") if item.get(k)]
        if item.get("revoked_at"):
            fields.append("revoked")
        print("  ".join(fields))


def _with_common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--url",
        default=os.environ.get("MULTIHOME_URL", "http://127.0.0.1:4000"),
        help="the gateway's base URL (default: $MULTIHOME_URL, else http://127.0.0.1:4000)",
    )
    p.add_argument(
        "--key",
        default=os.environ.get("MULTIHOME_ADMIN_KEY", ""),
        help="admin credential (default: $MULTIHOME_ADMIN_KEY)",
    )
    p.add_argument("--json", action="store_true", help="print raw JSON")
    return p


def add_commands(sub) -> None:
    t = sub.add_parser("tenants", help="manage tenants").add_subparsers(dest="action", required=True)
    _with_common(t.add_parser("list")).set_defaults(func=lambda a: _print(_call(a, "list_tenants"), a))
    c = _with_common(t.add_parser("create"))
    c.add_argument("name")
    c.set_defaults(func=lambda a: _print(_call(a, "create_tenant", {"name": a.name}), a))

    tm = sub.add_parser("teams", help="manage teams").add_subparsers(dest="action", required=True)
    c = _with_common(tm.add_parser("list"))
    c.add_argument("--tenant", required=True)
    c.set_defaults(func=lambda a: _print(_call(a, "list_teams", tenant=a.tenant), a))
    c = _with_common(tm.add_parser("create"))
    c.add_argument("--tenant", required=True)
    c.add_argument("name")
    c.set_defaults(func=lambda a: _print(_call(a, "create_team", {"name": a.name}, tenant=a.tenant), a))

    k = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    c = _with_common(k.add_parser("list"))
    c.add_argument("--tenant", required=True)
    c.set_defaults(func=lambda a: _print(_call(a, "list_keys", tenant=a.tenant), a))
    c = _with_common(k.add_parser("create", help="create a key; the secret is printed once"))
    c.add_argument("--tenant", required=True)
    c.add_argument("--name", required=True)
    c.add_argument("--team")
    c.add_argument("--role", action="append", dest="roles", help="repeatable (default: member)")
    c.add_argument("--model", action="append", dest="models", help="limit to model groups (repeatable)")
    c.add_argument("--expires-in-days", type=float)
    c.set_defaults(func=_create_key)
    c = _with_common(k.add_parser("revoke"))
    c.add_argument("--tenant", required=True)
    c.add_argument("key_id")
    c.set_defaults(func=lambda a: _print(_call(a, "revoke_key", tenant=a.tenant, id=a.key_id), a))

    p = sub.add_parser("policy", help="egress/residency policies").add_subparsers(dest="action", required=True)
    c = _with_common(p.add_parser("list"))
    c.add_argument("--tenant", required=True)
    c.set_defaults(func=lambda a: _print(_call(a, "list_policies", tenant=a.tenant), a))
    c = _with_common(p.add_parser("create", help="create a policy from a JSON file or string"))
    c.add_argument("--tenant", required=True)
    c.add_argument("body", help='JSON ({"scope": "tenant", "rules": [...]}) or @file.json')
    c.set_defaults(func=lambda a: _print(_call(a, "create_policy", _json_arg(a.body), tenant=a.tenant), a))
    c = _with_common(p.add_parser("explain", help="the decision for a caller and model, rule by rule"))
    c.add_argument("--tenant", required=True)
    c.add_argument("--model", required=True)
    c.add_argument("--key-id")
    c.add_argument("--team")
    c.add_argument("--endpoint", default="chat")
    c.set_defaults(func=_explain)

    b = sub.add_parser("budgets", help="spend budgets per tenant, team or key").add_subparsers(dest="action", required=True)
    c = _with_common(b.add_parser("list", help="budgets that apply, with what is spent or reserved"))
    c.add_argument("--tenant", required=True)
    c.add_argument("--team", help="also the budgets of this team")
    c.add_argument("--api-key", dest="key_id", help="also the budgets of this API key id")
    c.set_defaults(func=_list_budgets)
    c = _with_common(b.add_parser("create"))
    c.add_argument("--tenant", required=True)
    c.add_argument("--scope", choices=["tenant", "team", "key"], default="tenant")
    c.add_argument("--id", dest="scope_id", help="the team or key id (scope team or key)")
    c.add_argument("--amount", required=True, help="e.g. 250.00")
    c.add_argument("--currency", default="USD")
    c.add_argument("--period", choices=["day", "month", "total"], default="month")
    c.add_argument("--mode", choices=["hard", "soft"], default="hard", help="hard refuses calls; soft only flags them")
    c.set_defaults(func=_create_budget)
    c = _with_common(b.add_parser("update", help="change the amount and/or mode; what was spent is kept"))
    c.add_argument("--tenant", required=True)
    c.add_argument("budget_id")
    c.add_argument("--amount")
    c.add_argument("--mode", choices=["hard", "soft"])
    c.set_defaults(func=lambda a: _print(_call(a, "update_budget", tenant=a.tenant, id=a.budget_id, body={
        k: v for k, v in (("amount", a.amount), ("mode", a.mode)) if v is not None}), a))
    c = _with_common(b.add_parser("delete"))
    c.add_argument("--tenant", required=True)
    c.add_argument("budget_id")
    c.set_defaults(func=lambda a: _print(_call(a, "delete_budget", tenant=a.tenant, id=a.budget_id), a))

    e = sub.add_parser("entitlements", help="model licences").add_subparsers(dest="action", required=True)
    c = _with_common(e.add_parser("list"))
    c.add_argument("--tenant", required=True)
    c.set_defaults(func=lambda a: _print(_call(a, "list_entitlements", tenant=a.tenant), a))
    c = _with_common(e.add_parser("grant"))
    c.add_argument("--tenant", required=True)
    c.add_argument("--model", required=True)
    c.add_argument("--from", dest="starts_on", required=True, help="YYYY-MM-DD (inclusive)")
    c.add_argument("--to", dest="ends_on", required=True, help="YYYY-MM-DD (inclusive)")
    c.add_argument("--exclusive", action="store_true")
    c.set_defaults(func=_grant)
    c = _with_common(e.add_parser("revoke"))
    c.add_argument("--tenant", required=True)
    c.add_argument("entitlement_id")
    c.set_defaults(func=lambda a: _print(_call(a, "revoke_entitlement", tenant=a.tenant, id=a.entitlement_id), a))

    r = sub.add_parser("token-revocations", help="refuse OIDC tokens before their exp (docs/oidc.md)").add_subparsers(
        dest="action", required=True)
    c = _with_common(r.add_parser("list", help="token revocations (org-admin: all; others: their tenant's)"))
    c.add_argument("--tenant", help="only this tenant's revocations (org-admin)")
    c.add_argument("--kind", choices=["jti", "subject"])
    c.add_argument("--issuer", help="an identity.oidc issuer name or exact iss")
    c.add_argument("--subject")
    c.add_argument("--live", action="store_true", help="only those not yet expired")
    c.set_defaults(func=_list_revocations)
    c = _with_common(r.add_parser("create", help="revoke one token (--jti) or a subject's tokens (--subject)"))
    c.add_argument("--issuer", required=True, help="the identity.oidc issuer name, or its exact iss")
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--jti", help="revoke the one token with this jti claim")
    who.add_argument("--subject", help="revoke every token of this subject issued at or before --not-before")
    c.add_argument("--tenant", help="only tokens of this tenant (default: the caller's tenant for a tenant-admin, "
                   "every tenant for an org-admin)")
    c.add_argument("--not-before", help="subject: refuse tokens with iat at or before this (RFC 3339 or epoch "
                   "seconds; default now)")
    c.add_argument("--expires-at", help="when the revocation may be forgotten (RFC 3339 or epoch seconds); for "
                   "--jti give the token's exp (default: the issuer's max_token_lifetime_s from now)")
    c.add_argument("--reason", default="", help="free text, shown in lists and the change record (not secret)")
    c.set_defaults(func=_create_revocation)
    c = _with_common(r.add_parser("delete", help="lift a revocation: the tokens it refused work again"))
    c.add_argument("revocation_id")
    c.set_defaults(func=lambda a: _print(_call(a, "delete_token_revocation", id=a.revocation_id), a))


def _json_arg(value: str) -> dict:
    if value.startswith("@"):
        with open(value[1:]) as f:
            return json.load(f)
    return json.loads(value)


def _create_key(a) -> None:
    body = {"name": a.name, "roles": a.roles or ["member"]}
    if a.team:
        body["team_id"] = a.team
    if a.models:
        body["scopes_models"] = a.models
    if a.expires_in_days is not None:
        body["expires_in_days"] = a.expires_in_days
    out = _call(a, "create_key", body, tenant=a.tenant)
    if a.json:
        _print(out, a)
        return
    print(f"created {out['id']} ({', '.join(out['roles'])})")
    print(f"key (shown once, store it now): {out['key']}")


def _explain(a) -> None:
    body = {"tenant_id": a.tenant, "model": a.model, "endpoint": a.endpoint}
    if a.key_id:
        body["key_id"] = a.key_id
    if a.team:
        body["team_id"] = a.team
    out = _call(a, "explain", body)
    if a.json:
        _print(out, a)
        return
    print(("allowed: " if out["allowed"] else "denied: ") + (out.get("message") or ", ".join(out["deployments"])))
    for name, why in sorted(out.get("denied", {}).items()):
        print(f"  x {name}: {why}")


def _grant(a) -> None:
    body = {"model_group": a.model, "starts_on": a.starts_on, "ends_on": a.ends_on, "exclusive": a.exclusive}
    _print(_call(a, "grant_entitlement", body, tenant=a.tenant), a)


def _create_budget(a) -> None:
    body = {"scope": a.scope, "amount": a.amount, "currency": a.currency, "period": a.period, "mode": a.mode}
    if a.scope_id:
        body["scope_id"] = a.scope_id
    _print(_call(a, "create_budget", body, tenant=a.tenant), a)


def _list_budgets(a) -> None:
    out = _call(a, "list_budgets", query={"team": a.team, "key": a.key_id}, tenant=a.tenant)
    if a.json:
        _print(out, a)
        return
    for item in out["data"]:
        print(f"{item['id'] or '(config)'}  {item['scope']} {item['scope_id']}  {item['period']} {item['mode']}  "
              f"{item['spent_or_reserved']} of {item['amount']} {item['currency']}  remaining {item['remaining']}"
              + ("" if item.get("in_force", True) else "  (outranked by a smaller budget)"))


def _time_arg(value: str | None):
    """RFC 3339 text as given, or epoch seconds as a number (a token's exp/iat)."""
    if value is None:
        return None
    return int(value) if value.strip().isdigit() else value


def _create_revocation(a) -> None:
    body = {"kind": "jti" if a.jti else "subject", "issuer": a.issuer, "reason": a.reason}
    for name, value in (("jti", a.jti), ("subject", a.subject), ("tenant_id", a.tenant),
                        ("not_before", _time_arg(a.not_before)), ("expires_at", _time_arg(a.expires_at))):
        if value is not None:
            body[name] = value
    out = _call(a, "create_token_revocation", body)
    if a.json:
        _print(out, a)
        return
    what = f"jti {out['jti']}" if out["kind"] == "jti" else f"subject {out['subject']} (iat <= {out['not_before']})"
    scope = f"tenant {out['tenant_id']}" if out["tenant_id"] else "every tenant"
    print(f"revoked {what} of {out['issuer_name'] or out['issuer']}: {out['id']}"
          f" ({scope}, until {out['expires_at'] or 'deleted'})")


def _list_revocations(a) -> None:
    query = {"tenant": a.tenant, "kind": a.kind, "issuer": a.issuer, "subject": a.subject,
             "live": "true" if a.live else None}
    out = _call(a, "list_token_revocations", query=query)
    if a.json:
        _print(out, a)
        return
    for item in out["data"]:
        target = f"jti={item['jti']}" if item["kind"] == "jti" else f"sub={item['subject']} iat<={item['not_before']}"
        print(f"{item['id']}  {item['issuer_name'] or item['issuer']}  {target}  "
              f"{item['tenant_id'] or '(every tenant)'}  until {item['expires_at'] or '-'}"
              + ("" if item["live"] else "  (expired)") + (f"  {item['reason']}" if item["reason"] else ""))
