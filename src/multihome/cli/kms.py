"""`multihome kms init|status|rotate|rewrap|shred`: the key-encryption keys and data keys behind
envelope encryption (docs/encryption.md), worked on directly (the database and the KMS the
config's `storage:` and `kms:` sections name), so they run beside a serving gateway: rotation and
re-wrapping need no downtime, and a gateway picks up their changes within `kms.cache_ttl_s`.

Every key use that reaches the KMS, every rotation and every shred is written to the audit trail
(`audit.dir` of the config: this command writes its own chain there, beside the gateway's).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

CONFIG_ENV = "MULTIHOME_CONFIG"


def add_commands(sub: Any) -> None:
    k = sub.add_parser("kms", help="envelope encryption keys: init, status, rotate, rewrap, shred")
    ks = k.add_subparsers(dest="kms_command", required=True)

    i = _common(ks.add_parser("init", help="create the local KMS key file (mode 0600); never overwrites one"))
    i.add_argument("--key-file", help="where (default: kms.local.key_file of --config, else multihome-kms.key)")
    i.set_defaults(func=_init)

    s = _common(ks.add_parser("status", help="backend, KEKs and their versions, data keys per tenant and purpose"))
    s.add_argument("--json", action="store_true", help="print as JSON (for scripts)")
    s.set_defaults(func=_status)

    r = _common(ks.add_parser("rotate", help="a new KEK version for new writes; older versions keep decrypting"))
    r.add_argument("--tenant", help="only this tenant's KEK (default: every KEK in use, and the shared one)")
    r.set_defaults(func=_rotate)

    w = _common(ks.add_parser("rewrap", help="re-wrap stored data keys under their KEK's newest version"))
    w.add_argument("--tenant", help="only this tenant's data keys (default: all)")
    w.add_argument("--batch-size", type=int, default=100, help="data keys per transaction (default 100)")
    w.set_defaults(func=_rewrap)

    d = _common(ks.add_parser("shred", help="destroy a tenant's key material: what it stored becomes unreadable"))
    d.add_argument("--tenant", required=True, help="the tenant id")
    d.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    d.set_defaults(func=_shred)


def _common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--config", "-c", default=os.environ.get(CONFIG_ENV), help="gateway config (YAML; default: $MULTIHOME_CONFIG)"
    )
    p.add_argument("--db", help="database URL (default: the config's storage.url)")
    return p


def _config(args: argparse.Namespace) -> Any:
    from ..config import Config, load_config

    if not args.config:
        if args.kms_command == "init":
            return None
        raise SystemExit(f"kms {args.kms_command}: give --config FILE (or set {CONFIG_ENV})")
    config: Config = load_config(args.config)  # a ConfigError is printed by main (exit 2)
    return config


def _init(args: argparse.Namespace) -> int:
    from ..crypto import init_key_file

    config = _config(args)
    path = args.key_file or (config.kms.local.key_file if config is not None else "multihome-kms.key")
    try:
        created = init_key_file(path)
    except FileExistsError:
        print(f"kms init: {path} exists already; not overwritten (its keys open what is stored)", file=sys.stderr)
        return 1
    print(
        f"created {created.resolve()} (mode 0600). Back it up apart from the database: without it, nothing sealed opens."
    )
    return 0


@asynccontextmanager
async def _keyring(args: argparse.Namespace) -> AsyncIterator[Any]:
    """The config's keyring on its database, with its KMS events going to the audit trail."""
    from ..config import env_secret
    from ..crypto import open_keyring
    from ..storage import SchemaOutOfDate, open_store

    config = _config(args)
    url = args.db or env_secret(config.storage.url_env, what="storage.url_env") or config.storage.url
    if not url:
        raise SystemExit(f"kms {args.kms_command}: no database (set storage.url in the config, or --db URL)")
    audit = None
    if config.audit.enabled:
        from ..audit import AuditLog

        audit = AuditLog(config.audit, heads_url=url)
        await audit.start()
    store = await open_store(url)
    try:
        await store.ensure_current()  # a maintenance command never changes the schema under a gateway
    except SchemaOutOfDate as exc:
        await store.close()
        if audit is not None:
            await audit.close()
        raise SystemExit(f"kms {args.kms_command}: {exc}") from None
    keyring = open_keyring(config.kms, store.engine, audit=(lambda e: audit.append("kms", e)) if audit else None)
    try:
        yield keyring
    finally:
        await keyring.close()
        await store.close()
        if audit is not None:
            await audit.close()  # every event appended is on disk before the command exits


def _run(coro: Any) -> int:
    from ..crypto import KmsError

    try:
        return int(asyncio.run(coro))
    except KmsError as exc:
        print(f"kms: {exc}", file=sys.stderr)
        return 1


def _status(args: argparse.Namespace) -> int:
    return _run(_status_async(args))


async def _status_async(args: argparse.Namespace) -> int:
    import json

    from ..crypto import KmsError

    async with _keyring(args) as keyring:
        config = keyring.config
        stats = await keyring.repo.stats()
        keks: dict[str, Any] = {}
        unreadable: dict[str, str] = {}
        for backend in keyring.resolver.backends():
            versions = getattr(backend, "kek_versions", None)
            try:
                keks[backend.label] = versions() if versions is not None else None
            except KmsError as exc:  # no local key file yet (nothing sealed: the normal fresh state), or a lost one
                keks[backend.label], unreadable[backend.label] = {}, str(exc)
    limit = config.max_messages_per_key
    out = {
        "backend": config.backend,
        "key_id": config.key_id,
        "tenants_with_own_kms": {t: target.backend for t, target in config.tenants.items()},
        "max_messages_per_key": limit,
        "keks": {
            label: (
                {k: {"latest": v[0], "versions": v[1]} for k, v in kv.items()} if kv is not None else "held by the KMS"
            )
            for label, kv in keks.items()
        },
        "keks_unreadable": unreadable,
        "data_keys": [s._asdict() for s in stats],
    }
    # Keys that cannot be read are a problem once something is sealed under them (exit 1), not before.
    failed = 1 if unreadable and stats else 0
    if args.json:
        print(json.dumps(out, indent=2))
        return failed
    print(
        f"backend: {config.backend}" + (f" (shared KEK {config.key_id})" if config.key_id else " (one KEK per tenant)")
    )
    for tenant, backend in out["tenants_with_own_kms"].items():
        print(f"  tenant {tenant}: its own {backend} KMS")
    for label, kv in keks.items():
        print(f"KMS {label}:")
        if kv is None:
            print("  KEK versions are kept by the KMS (see the data keys below)")
        if label in unreadable:
            print(f"  its KEKs cannot be read: {unreadable[label]}")
        for name, (latest, versions) in (kv or {}).items():
            print(f"  KEK {name}: latest version {latest}, versions held {', '.join(versions) or 'none (destroyed)'}")
    if not stats:
        print("data keys: none yet (nothing has been sealed)")
        return 0
    if unreadable:
        print(
            "data keys are stored, but the KEKs of a KMS above cannot be read: what they wrap does not open",
            file=sys.stderr,
        )
    print(f"data keys (seals are counted per key against the limit of {limit}):")
    print(f"  {'tenant':<24} {'purpose':<12} {'state':<8} {'keys':>5} {'seals':>12} {'busiest key':>14}  KEK")
    for s in stats:
        share = f"{s.max_messages / limit:.2%}"
        kek = f"{s.kek_id}" + (f" v{s.kek_version}" if s.kek_version else "")
        print(f"  {s.tenant_id:<24} {s.purpose:<12} {s.state:<8} {s.keys:>5} {s.messages:>12} {share:>14}  {kek}")
    return failed


def _rotate(args: argparse.Namespace) -> int:
    return _run(_rotate_async(args))


async def _rotate_async(args: argparse.Namespace) -> int:
    from ..crypto import rotate

    async with _keyring(args) as keyring:
        done = await rotate(keyring, args.tenant)
    if not done:
        print("nothing to rotate: no KEK is in use yet")
    for r in done:
        print(f"rotated {r.kek_id} on {r.kms}" + (f": new version {r.kek_version}" if r.kek_version else ""))
    if done:
        print("new seals use new data keys under the new version; run `multihome kms rewrap` to move stored ones")
    return 0


def _rewrap(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise SystemExit("kms rewrap: --batch-size must be at least 1")
    return _run(_rewrap_async(args))


async def _rewrap_async(args: argparse.Namespace) -> int:
    from ..crypto import rewrap

    def progress(done: int, total: int) -> None:
        print(f"rewrap: {done}/{total} data keys", file=sys.stderr, flush=True)

    async with _keyring(args) as keyring:
        report = await rewrap(keyring, tenant=args.tenant, batch_size=args.batch_size, progress=progress)
    print(f"re-wrapped {report.rewrapped} of {report.total} data keys; {report.skipped} changed meanwhile (run again)")
    for data_key, why in report.failed:
        print(f"  {data_key}: refused by the KMS: {why}", file=sys.stderr)
    return 1 if report.failed else 0


def _shred(args: argparse.Namespace) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            print("kms shred: refusing without a terminal to confirm on; pass --yes", file=sys.stderr)
            return 1
        print(
            f"This destroys the key material of tenant {args.tenant}: everything it stored sealed (responses, "
            "memory, runs, captured content) becomes unreadable for good, on every replica."
        )
        if input(f"Type the tenant id ({args.tenant}) to confirm: ").strip() != args.tenant:
            print("not confirmed; nothing was changed", file=sys.stderr)
            return 1
    return _run(_shred_async(args))


async def _shred_async(args: argparse.Namespace) -> int:
    from ..crypto import shred

    async with _keyring(args) as keyring:
        report = await shred(keyring, args.tenant)
    kek = (
        f"KEK {report.kek_destroyed} destroyed"
        if report.kek_destroyed
        else "its KEK is shared or its own: not destroyed"
    )
    print(f"shredded tenant {report.tenant}: {report.data_keys_deleted} data keys deleted, {kek}")
    print("running gateways drop its cached keys within kms.cache_ttl_s")
    return 0
