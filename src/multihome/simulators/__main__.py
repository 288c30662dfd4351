"""CLI: ``python -m multihome.simulators --kind openai --port 9101 --name openai-sim``.

Prints ``READY <url>`` on stdout once listening, serves until SIGTERM/SIGINT, exits 0."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from .config import KINDS, SimulatorConfig
from .loop import new_event_loop
from .server import start_simulator


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m multihome.simulators", description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=KINDS, default="openai")
    p.add_argument("--name", default=None, help="simulator name (appears in replies); default <kind>-sim")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (see the READY line)")
    p.add_argument("--api-key-env", metavar="VAR", help="require the API key held in this environment variable")
    p.add_argument(
        "--entra-token-env",
        metavar="VAR",
        help="azure, foundry_anthropic, azure_inference: require this bearer token (env var name)",
    )
    p.add_argument("--region", default="eastus", help="azure: x-ms-region header; bedrock/vertex: the region served")
    p.add_argument("--aws-access-key-id-env", metavar="VAR", help="bedrock: verify SigV4 against this access key id")
    p.add_argument("--aws-secret-access-key-env", metavar="VAR", help="bedrock: ... and this secret access key")
    p.add_argument("--oauth-token-env", metavar="VAR", help="vertex, vertex_anthropic: require this OAuth bearer token")
    p.add_argument(
        "--google-public-key-file",
        metavar="PATH",
        help="vertex_anthropic: PEM public key that must verify the JWT assertions at POST /token",
    )
    p.add_argument(
        "--deployment",
        action="append",
        dest="deployments",
        metavar="NAME[=MODEL]",
        help="known model/deployment (repeatable); default: accept any name",
    )
    p.add_argument("--embedding-dimensions", type=int, default=8)
    return p.parse_args(argv)


def _secret(var: str | None, flag: str) -> str | None:
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        sys.exit(f"{flag}: environment variable {var} is not set or empty")
    return value


def _read(path: str | None, flag: str) -> str | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        sys.exit(f"{flag}: cannot read {path}: {exc.strerror}")


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    deployments = None
    if args.deployments:
        deployments = {}
        for item in args.deployments:
            name, _, model = item.partition("=")
            deployments[name] = model or name
    return SimulatorConfig(
        kind=args.kind,
        name=args.name or f"{args.kind}-sim",
        host=args.host,
        port=args.port,
        api_key=_secret(args.api_key_env, "--api-key-env"),
        entra_token=_secret(args.entra_token_env, "--entra-token-env"),
        region=args.region,
        aws_access_key_id=_secret(args.aws_access_key_id_env, "--aws-access-key-id-env"),
        aws_secret_access_key=_secret(args.aws_secret_access_key_env, "--aws-secret-access-key-env"),
        oauth_token=_secret(args.oauth_token_env, "--oauth-token-env"),
        google_public_key=_read(args.google_public_key_file, "--google-public-key-file"),
        deployments=deployments,
        embedding_dimensions=args.embedding_dimensions,
    )


async def _serve(config: SimulatorConfig) -> None:
    sim = await start_simulator(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {sim.url}", flush=True)
    await stop.wait()
    await sim.close()


def main(argv: list[str] | None = None) -> int:
    config = config_from_args(parse_args(argv))
    loop = new_event_loop()
    try:
        loop.run_until_complete(_serve(config))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
