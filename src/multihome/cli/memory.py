"""`multihome memory namespaces|list|search|forget-user|delete-namespace|reembed`: a tenant's long-term agent
memory from a shell (docs/memory.md).

Talks to a running gateway's `/v1/memory` routes (`--url`, default $MULTIHOME_URL) with a key
(`--key`, default $MULTIHOME_ADMIN_KEY): a tenant's key acts on its own tenant; an org-admin key
names the tenant with `--tenant` (name or id). Forgetting a user and deleting a namespace need a
tenant-admin or org-admin key; the gateway checks it, as for any client. `reembed` moves a namespace to
the configured embedding model through the admin API, a batch per request until the switch; killed or
cut off, it is run again and goes on from what was done (state/memory/reembed.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import urllib.parse
from typing import Any

from .admin import Admin, _common
from .output import print_json, table


def _path(a: argparse.Namespace, api: Admin, path: str, **query: Any) -> str:
    if getattr(a, "tenant", None):
        query["tenant"] = api.tenant(a.tenant)
    query = {k: v for k, v in query.items() if v is not None}
    return "/v1/memory" + path + (f"?{urllib.parse.urlencode(query)}" if query else "")


def _when(ts: int | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _namespaces(a: argparse.Namespace, api: Admin) -> None:
    found = api.walk(
        lambda after: api._request("GET", _path(a, api, "/namespaces", agent_id=a.agent, user_id=a.user, after=after))
    )
    if a.json:
        return print_json(found)
    rows = [
        [
            n["agent_id"] or "-",
            n["user_id"] or "-",
            n["records"],
            n["default_ttl_seconds"] or "-",
            f"{n['embedding_model']} ({n['embedding_dimensions']})" if n.get("embedding_model") else "-",
            _when(n["updated_at"]),
        ]
        for n in found["data"]
    ]
    print(table(["agent", "user", "records", "default ttl (s)", "embedding model", "updated"], rows), end="")


def _records(a: argparse.Namespace, api: Admin) -> None:
    found = api._request(
        "GET", _path(a, api, "/records", agent_id=a.agent or "", user_id=a.user or "", limit=a.limit, after=a.after)
    )
    if a.json:
        return print_json(found)
    rows = [[r["id"], _when(r["created_at"]), _when(r["expires_at"]), r["text"][:80]] for r in found["data"]]
    print(table(["id", "created", "expires", "text"], rows), end="")
    if found["has_more"]:
        print(f"more: --after {found['last_id']}")


def _search(a: argparse.Namespace, api: Admin) -> None:
    body: dict[str, Any] = {"agent_id": a.agent or "", "user_id": a.user or "", "query": a.query, "top_k": a.top_k}
    if a.filters:
        try:
            body["filters"] = json.loads(a.filters)
        except ValueError:
            raise SystemExit('--filters must be a JSON object, e.g. \'{"topic": "travel"}\'') from None
    body["mode"] = a.mode
    found = api._request("POST", _path(a, api, "/search"), json.dumps(body).encode())
    if a.json:
        return print_json(found)
    rows = [[f"{h['score']:.4f}", f"{h['similarity']:.3f}", h["id"], h["text"][:80]] for h in found["data"]]
    print(table(["score", "similarity", "id", "text"], rows), end="")


def _forget_user(a: argparse.Namespace, api: Admin) -> None:
    if not a.yes:
        raise SystemExit(f"this deletes every memory record of user {a.user!r} for good; add --yes to go on")
    done = api._request("DELETE", _path(a, api, "/users/" + urllib.parse.quote(a.user, safe="")))
    if a.json:
        return print_json(done)
    print(f"forgot user {a.user}: {done['namespaces_deleted']} namespaces, {done['records_deleted']} records deleted")


def _delete_namespace(a: argparse.Namespace, api: Admin) -> None:
    if not a.yes:
        raise SystemExit("this deletes the namespace and every record in it for good; add --yes to go on")
    done = api._request("DELETE", _path(a, api, "/namespaces", agent_id=a.agent or "", user_id=a.user or ""))
    if a.json:
        return print_json(done)
    print(f"deleted namespace agent={a.agent or '-'} user={a.user or '-'}: {done['records_deleted']} records")


def _namespace_ids(value: str) -> tuple[str, str]:
    """`AGENT/USER` (either may be empty: `support-bot/`, `/alice`); a value without `/` is an agent's own."""
    agent, _, user = value.partition("/")
    return agent, user


def _reembed(a: argparse.Namespace, api: Admin) -> None:
    tenant = api.tenant(a.tenant) if a.tenant else api.call("whoami")["tenant"]
    agent, user = _namespace_ids(a.namespace)
    body = {"agent_id": agent, "user_id": user, "batch_size": a.batch_size}
    while True:
        done = api.call("reembed_memory_namespace", body, tenant=tenant)
        if a.json:
            print(json.dumps(done), flush=True)
        else:
            print(
                f"{done['status']}: {done['records_done']}/{done['records_total']} records re-embedded by "
                f"{done['to_model']} ({done['to_dimensions']}), from {done['from_model']} ({done['from_dimensions']})",
                flush=True,
            )
        if done["status"] == "completed":
            return


def add_commands(sub: Any) -> None:
    m = sub.add_parser("memory", help="long-term agent memory: namespaces, records, search, forget a user, re-embed")
    ms = m.add_subparsers(dest="action", required=True)

    def command(name: str, func: Any, help_: str) -> argparse.ArgumentParser:
        c = _common(ms.add_parser(name, help=help_), tenant=None)
        c.set_defaults(func=lambda a: func(a, Admin(a)))
        return c

    n = command("namespaces", _namespaces, "the tenant's namespaces, with record counts and default TTLs")
    n.add_argument("--agent", help="only this agent's")
    n.add_argument("--user", help="only this user's")

    r = command("list", _records, "a namespace's records, newest first")
    r.add_argument("--agent", help="agent id (default: none)")
    r.add_argument("--user", help="user id (default: none)")
    r.add_argument("--limit", type=int, default=20)
    r.add_argument("--after", help="a record id: the page after it")

    s = command("search", _search, "hybrid search of a namespace")
    s.add_argument("query")
    s.add_argument("--agent", help="agent id (default: none)")
    s.add_argument("--user", help="user id (default: none)")
    s.add_argument("--top-k", type=int, default=5)
    s.add_argument("--filters", help='a JSON metadata filter, e.g. \'{"topic": "travel"}\'')
    s.add_argument("--mode", choices=("hybrid", "vector", "keyword"), default="hybrid")

    f = command("forget-user", _forget_user, "delete every memory record of a user, whatever the agent")
    f.add_argument("user", help="the user id")
    f.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    d = command("delete-namespace", _delete_namespace, "delete a namespace and all its records")
    d.add_argument("--agent", help="agent id (default: none)")
    d.add_argument("--user", help="user id (default: none)")
    d.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    e = command("reembed", _reembed, "move a namespace to the configured embedding model (resumable: run it again)")
    e.add_argument("namespace", help="AGENT/USER (either may be empty: 'support-bot/', '/alice')")
    e.add_argument("--batch-size", type=int, default=200, help="records re-embedded per request (1-2000)")
