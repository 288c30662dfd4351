"""The `multihome` command: builds the parser from each command module's `add_commands` and runs
the chosen command. `python -m multihome.cli` runs the same."""

from __future__ import annotations

import argparse
import sys

from ..config import ConfigError
from . import admin, audit, contracts, demo, serve


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="multihome", description="One OpenAI-compatible gateway for every AI cloud.")
    sub = p.add_subparsers(dest="command", required=True)
    for module in (serve, demo, admin, audit, contracts):
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
