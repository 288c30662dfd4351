"""`multihome audit verify|export|keygen`: work on an audit directory directly (no gateway needed).

Keys and the directory come from flags, or from the `audit:` section of a gateway config
(`--config`); flags win.
"""

from __future__ import annotations

import argparse
import os
import sys

from .audit.config import AuditConfig


def add_commands(sub) -> None:
    a = sub.add_parser("audit", help="verify and export the audit trail").add_subparsers(dest="action", required=True)

    v = a.add_parser("verify", help="check every chain and signed checkpoint; exit 1 on tampering")
    _common(v)
    v.add_argument("--public-key", action="append", default=[], metavar="[KEYID=]FILE",
                   help="Ed25519 public key (PEM) checkpoints may be signed with; repeatable (old keys after a rotation)")
    v.add_argument("--quiet", action="store_true", help="print problems only")
    v.set_defaults(func=_verify)

    e = a.add_parser("export", help="matching events as JSONL on stdout, exactly as stored (hashes included)")
    _common(e)
    for name in ("tenant", "kind", "model-group", "deployment", "outcome", "subject", "key-id", "request-id"):
        e.add_argument(f"--{name}")
    e.add_argument("--since", help="unix seconds or ISO-8601")
    e.add_argument("--until", help="unix seconds or ISO-8601 (exclusive)")
    e.set_defaults(func=_export)

    k = a.add_parser("keygen", help="write a new Ed25519 signing key (PEM) and print its public key and id")
    k.add_argument("--out", required=True, help="private key file to create (mode 0600)")
    k.set_defaults(func=_keygen)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", help="audit directory (default: audit.dir from --config)")
    p.add_argument("--config", help="gateway config file whose `audit:` section to use")


def _section(args) -> AuditConfig:
    if not args.config:
        return AuditConfig()
    import msgspec
    import yaml

    with open(args.config) as f:
        data = yaml.safe_load(f) or {}
    try:
        return msgspec.convert(data.get("audit") or {}, AuditConfig)
    except msgspec.ValidationError as exc:
        raise SystemExit(f"audit: {exc}") from None


def _dir(args, section: AuditConfig) -> str:
    directory = args.dir or section.dir
    if not directory:
        raise SystemExit("no audit directory: pass --dir or --config with audit.dir set")
    return directory


def _public_keys(args, section: AuditConfig) -> dict:
    from .audit.keys import KeyError_, key_id_of, load_public_key

    specs = [(kid, path) for kid, path in section.public_keys.items()]
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
    from .audit.verify import verify_dir

    section = _section(args)
    report = verify_dir(_dir(args, section), _public_keys(args, section))
    for problem in report.problems:
        print(problem, file=sys.stdout if problem.severity == "error" else sys.stderr)
    errors = len(report.errors)
    summary = f"{report.chains} chains, {report.events} events, {report.checkpoints} checkpoints"
    if errors:
        print(f"TAMPERED or damaged: {errors} problem(s) in {summary}")
        return 1
    if not args.quiet:
        print(f"ok: {summary} verified")
    return 0


def _export(args) -> int:
    from .audit.reader import AuditReader, BadQuery, Filters, parse_time

    section = _section(args)
    try:
        filters = Filters(
            tenant=args.tenant, kind=args.kind, model_group=args.model_group, deployment=args.deployment,
            outcome=args.outcome, subject=args.subject, key_id=args.key_id, request_id=args.request_id,
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


def _keygen(args) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from .audit.keys import key_id_of, private_pem, public_pem

    key = Ed25519PrivateKey.generate()
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem(key))
    print(f"key id: {key_id_of(key.public_key())}")
    print(public_pem(key).decode(), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m multihome.cli_audit audit verify ...`: the same commands without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="multihome")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
