"""The `multihome` command: builds the parser from each command module's `add_commands` and runs
the chosen command. `python -m multihome.cli` runs the same."""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..config import ConfigError
from . import admin, audit, contracts, demo, kms, memory, serve

ENVIRONMENT = """environment:
  MULTIHOME_URL        the gateway the admin commands and route explain talk to (default: http://127.0.0.1:4000)
  MULTIHOME_ADMIN_KEY  the admin credential they send (an org-admin, tenant-admin or auditor key)
  MULTIHOME_CONFIG     the config file serve, db upgrade, contracts and kms read when --config is not given

Run `multihome COMMAND --help` for a command's options."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="multihome",
        description="One OpenAI-compatible gateway for every AI cloud.",
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"multihome {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for module in (serve, demo, admin, audit, contracts, kms, memory):
        module.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `multihome ... | head`: the reader has what it wanted; no traceback
        # Python flushes stdout again at exit, which would fail once more: point it at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
