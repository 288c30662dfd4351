"""`multihome demo`: the gateway in front of four simulated clouds, ready in about a second."""

from __future__ import annotations

import argparse


def demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    from .process_end import end_process

    end_process(run_demo(port=args.port, scripted_only=args.once))  # not through finalization: process_end.py


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the gateway in front of four simulated clouds")
    p.add_argument("--port", type=int, default=4000)
    p.add_argument("--once", action="store_true", help="show the failover, then exit")
    p.set_defaults(func=demo)
