"""The `multihome` command line: `main.py` builds it from the command modules (serve, demo, admin
resources, audit, contracts)."""

from .main import main

__all__ = ["main"]
