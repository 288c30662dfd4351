"""`multihome audit verify|export|keygen|heads export`: work on an audit directory directly (no gateway needed).

Keys and the directory come from flags, or from the `audit:` section of a gateway config
(`--config`); the head registry from `--heads FILE`, `--database URL`, or the config's `storage:`
section. Flags win.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..config.audit import AuditConfig


def add_commands(sub) -> None:
    a = sub.add_parser("audit", help="verify and export the audit trail").add_subparsers(dest="action", required=True)

    v = a.add_parser("verify", help="check every chain and signed checkpoint; exit 1 on tampering")
    _common(v)
    v.add_argument(
        "--public-key",
        action="append",
        default=[],
        metavar="[KEYID=]FILE",
        help="Ed25519 public key (PEM) checkpoints may be signed with; repeatable (old keys after a rotation)",
    )
    v.add_argument(
        "--heads",
        metavar="FILE",
        help="head registry export (`audit heads export`) to check the files "
        "against: a chain cut back or deleted since is found",
    )
    v.add_argument(
        "--database",
        metavar="URL",
        help="check against the head registry in this database (default: storage.url of --config)",
    )
    v.add_argument("--trail", help="which trail of the registry this directory is (default: what its chains say)")
    v.add_argument("--quiet", action="store_true", help="print problems only")
    v.set_defaults(func=_verify)

    e = a.add_parser("export", help="matching events as JSONL on stdout, exactly as stored (hashes included)")
    _common(e)
    for name in ("tenant", "kind", "model-group", "deployment", "outcome", "subject", "key-id", "request-id"):
        e.add_argument(f"--{name}")
    e.add_argument("--since", help="unix seconds or ISO-8601")
    e.add_argument("--until", help="unix seconds or ISO-8601 (exclusive)")
    e.set_defaults(func=_export)

    h = a.add_parser("heads", help="the head registry: the newest checkpoint of every chain, kept in the database")
    x = h.add_subparsers(dest="heads_action", required=True).add_parser(
        "export", help="write the head registry as signed JSON, for a witness the gateway's host cannot rewrite"
    )
    x.add_argument("--config", help="gateway config whose `storage:` section names the database")
    x.add_argument("--database", metavar="URL", help="the database (default: storage.url of --config)")
    x.add_argument("--trail", help="only this trail (default: every trail in the database)")
    x.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    x.set_defaults(func=_export_heads)

    k = a.add_parser("keygen", help="write a new Ed25519 signing key (PEM) and print its public key and id")
    k.add_argument("--out", required=True, help="private key file to create (mode 0600)")
    k.set_defaults(func=_keygen)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", help="audit directory (default: audit.dir from --config)")
    p.add_argument("--config", help="gateway config file whose `audit:` section to use")


def _config(args) -> dict:
    if not args.config:
        return {}
    import yaml

    try:
        with open(args.config) as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"{args.config}: {exc}") from None
    return data if isinstance(data, dict) else {}


def _section(args) -> AuditConfig:
    import msgspec

    try:
        return msgspec.convert(_config(args).get("audit") or {}, AuditConfig)
    except msgspec.ValidationError as exc:
        raise SystemExit(f"audit: {exc}") from None


def _database(args) -> str | None:
    """--database, else the storage database the config names (where the gateway keeps the registry)."""
    if args.database or not args.config:
        return args.database
    import msgspec

    from ..config import ConfigError, Storage, env_secret

    try:
        storage = msgspec.convert(_config(args).get("storage") or {}, Storage)
        return env_secret(storage.url_env, what="storage.url_env") or storage.url
    except (msgspec.ValidationError, ConfigError) as exc:
        raise SystemExit(f"storage: {exc}") from None


def _heads(args) -> list | None:
    """The head registry to verify against: the export and/or the database; None when neither is given."""
    from ..audit.heads import load_file, load_from_database

    url, heads = _database(args), None
    if args.heads:
        heads = load_file(args.heads)
    if url:
        stored = load_from_database(url)
        stored[:0] = heads or []  # a Heads: its unreadable rows are named by verify
        heads = stored
    return heads


def _dir(args, section: AuditConfig) -> str:
    directory = args.dir or section.dir
    if not directory:
        raise SystemExit("no audit directory: pass --dir or --config with audit.dir set")
    return directory


def _public_keys(args, section: AuditConfig) -> dict:
    from ..audit.keys import KeyError_, key_id_of, load_public_key

    specs: list[tuple[str | None, str]] = list(section.public_keys.items())
    for spec in args.public_key:
        kid, sep, path = spec.partition("=")
        specs.append((kid, path) if sep else (None, spec))
    keys = {}
    try:
        for kid, path in specs:
            key = load_public_key(path)
            keys[kid or key_id_of(key)] = key
            keys.setdefault(key_id_of(key), key)
    except KeyError_ as exc:
        raise SystemExit(str(exc)) from None
    return keys


def _verify(args) -> int:
    from ..audit.heads import HeadsError
    from ..audit.verify import verify_dir

    section = _section(args)
    try:
        heads = _heads(args)
    except HeadsError as exc:
        print(f"audit verify: {exc}", file=sys.stderr)
        return 2
    report = verify_dir(_dir(args, section), _public_keys(args, section), heads, args.trail)
    for problem in report.problems:
        print(problem, file=sys.stdout if problem.severity == "error" else sys.stderr)
    errors = len(report.errors)
    summary = f"{report.chains} chains, {report.events} events, {report.checkpoints} checkpoints"
    if report.heads is not None:
        summary += f", {report.heads} head registry entries"
    if errors:
        print(f"TAMPERED or damaged: {errors} problem(s) in {summary}")
        return 1
    if not args.quiet:
        print(f"ok: {summary} verified")
    return 0


def _export(args) -> int:
    from ..audit.reader import AuditReader, BadQuery, Filters, parse_time

    section = _section(args)
    try:
        filters = Filters(
            tenant=args.tenant,
            kind=args.kind,
            model_group=args.model_group,
            deployment=args.deployment,
            outcome=args.outcome,
            subject=args.subject,
            key_id=args.key_id,
            request_id=args.request_id,
            since=parse_time(args.since, "--since") if args.since else None,
            until=parse_time(args.until, "--until") if args.until else None,
        )
    except BadQuery as exc:
        raise SystemExit(str(exc)) from None
    out = sys.stdout.buffer
    for raw, _ in AuditReader(_dir(args, section)).iter_events(filters):
        out.write(raw + b"\n")
    out.flush()
    return 0


def _export_heads(args) -> int:
    from ..audit.heads import HeadsError, dump, load_from_database

    url = _database(args)
    if not url:
        raise SystemExit("no database: pass --database URL or --config with storage.url (or storage.url_env)")
    try:
        heads = load_from_database(url, args.trail)
    except HeadsError as exc:
        print(f"audit heads export: {exc}", file=sys.stderr)
        return 2
    data = dump(list(heads))
    if args.out:
        with open(args.out, "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    trails = len({h.trail for h in heads})
    print(f"exported {len(heads)} chain heads of {trails} trail(s)", file=sys.stderr)
    for bad in heads.unreadable:  # the readable heads are exported; these are not, and say so (exit 1)
        print(f"audit heads export: chain {bad.chain} (trail {bad.trail}) not exported: {bad.problem}", file=sys.stderr)
    return 1 if heads.unreadable else 0


def _keygen(args) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ..audit.keys import key_id_of, private_pem, public_pem

    key = Ed25519PrivateKey.generate()
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # perhaps the key checkpoints are signed with: never replaced
        print(f"audit keygen: {args.out} exists already; not overwritten (choose another --out)", file=sys.stderr)
        return 1
    except OSError as exc:  # no such directory, not writable
        print(f"audit keygen: cannot create {args.out}: {exc.strerror}", file=sys.stderr)
        return 1
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem(key))
    print(f"key id: {key_id_of(key.public_key())}")
    print(public_pem(key).decode(), end="")
    return 0
