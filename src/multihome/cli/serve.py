"""`multihome serve`, `config check`, `db upgrade` and `route explain`: run a gateway, check its config and
database, and ask a running one for its routing plan."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import secrets
import sys
from typing import Any, Literal, TypedDict

from ..config import ConfigError, check_drain_timeout, load_config, named_env_vars
from ..config.metering import per_process_limits
from ..observability.logs import LEVELS

CONFIG_ENV = "MULTIHOME_CONFIG"  # app.CONFIG_ENV: importing app here would load the whole gateway for --help


def _raise_fd_limit() -> None:
    """Each open stream holds two sockets (client and upstream); allow as many as the host permits."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class _Serving(TypedDict):
    """The uvicorn.run arguments one process and `--workers` processes share, typed as uvicorn declares them."""

    host: str
    port: int
    loop: Literal["uvloop"]
    http: type[asyncio.Protocol]
    lifespan: Literal["on"]
    access_log: bool
    server_header: bool
    log_config: dict[str, Any]
    backlog: int
    timeout_graceful_shutdown: int | None


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ..api.console.session import SESSION_KEY_ENV
    from ..api.drain import uvicorn_timeout
    from ..api.head_limit import protocol
    from ..app import CONFIG_ENV, DRAIN_ENV, LISTEN_ENV, SUPERVISED_ENV, served_app
    from ..live_config import read_config
    from ..observability.logs import serve_log_config
    from ..observability.metrics_dir import MULTIPROC_ENV, per_run
    from ..providers.transport import use_upstream_threads
    from .process_end import end_process

    config, version = read_config(args.config)
    use_upstream_threads(config.server.upstream_threads)
    if args.drain_timeout is not None:
        config.server.drain_timeout_s = check_drain_timeout(args.drain_timeout, "--drain-timeout")
    if args.workers > 1:
        apart = per_process_limits(config.metering, bool(config.storage.url or config.storage.url_env))
        if apart:
            print(
                f"multihome serve --workers {args.workers}: budgets and rate limits need counters the workers "
                f"share, and without Redis each worker would count on its own ({', '.join(apart)}): together "
                f"they would allow up to {args.workers} times each limit. Set metering.redis_url_env (Redis "
                "shares the counters across workers and replicas), or run one worker (--workers 1).",
                file=sys.stderr,
            )
            return 2
    _raise_fd_limit()
    host = args.host or config.server.host
    port = args.port or config.server.port
    common = _Serving(
        host=host,
        port=port,
        loop="uvloop",
        # httptools, with a bounded request head. uvicorn's stubs ask for a protocol class, but uvicorn only
        # calls it (server.py: `config.http_protocol_class(config=..., ...)`), so a factory works.
        http=protocol(config.server.max_header_bytes, config.server.client_idle_timeout_s),  # type: ignore[typeddict-item]
        lifespan="on",
        access_log=False,  # the gateway writes its own (api/access_log.py)
        # No `server: uvicorn` on every answer: it tells a caller nothing it needs, and each header uvicorn
        # sends costs two regex checks per answer.
        server_header=False,
        log_config=serve_log_config(args.log_level, config.server.log_format),
        backlog=4096,
        # A backstop only: the gateway ends what is still open at its own, earlier deadline. uvicorn's stubs
        # say int, but it goes to asyncio.timeout(), which takes seconds as a float.
        timeout_graceful_shutdown=uvicorn_timeout(config.server.drain_timeout_s),  # type: ignore[typeddict-item]
    )
    if args.workers > 1:
        os.environ[CONFIG_ENV] = os.path.abspath(args.config)
        os.environ[DRAIN_ENV] = repr(config.server.drain_timeout_s)  # with any --drain-timeout applied
        os.environ[LISTEN_ENV] = f"http://{host}:{port}"
        os.environ[SUPERVISED_ENV] = "1"  # the admin reload asks this process to pass SIGHUP on
        # One console session key for all workers (a session made on one is read by the others).
        os.environ.setdefault(SESSION_KEY_ENV, base64.b64encode(secrets.token_bytes(32)).decode())
        with per_run() if config.metrics.enabled else contextlib.nullcontext():  # metrics summed over workers
            _run_workers(uvicorn.Config("multihome.app:app_from_env", factory=True, workers=args.workers, **common))
    else:
        # One process uses the multiprocess directory only when the operator set it: empty it of an earlier
        # run's files first, as for --workers, or a restart would add the last run's counts to this one's.
        chosen = config.metrics.enabled and os.environ.get(MULTIPROC_ENV)
        with per_run() if chosen else contextlib.nullcontext():
            uvicorn.run(
                served_app(config, f"http://{host}:{port}", os.path.abspath(args.config), version=version), **common
            )
        end_process(0)  # stopped (SIGINT; SIGTERM never gets here): not through finalization, see process_end.py
    return 0


def _run_workers(config: Any) -> None:
    """uvicorn.run's `workers > 1` branch, with a supervisor that passes SIGHUP on to every worker (each
    reloads the config file, live_config.py) instead of uvicorn's default of restarting them all, which
    would end every open stream at the drain deadline; and a second stop signal too, while the workers
    drain (uvicorn's would wait for them without reading its signals again), so each ends what it has
    open at once (api/drain.py)."""
    import signal

    from uvicorn.supervisors.multiprocess import Multiprocess

    class Supervisor(Multiprocess):
        def handle_hup(self) -> None:
            self._tell_workers(signal.SIGHUP)

        def join_all(self) -> None:
            while any(worker.process.is_alive() for worker in self.processes):
                if self.signal_queue:
                    stop = any(sig in (signal.SIGTERM, signal.SIGINT) for sig in self.signal_queue)
                    self.signal_queue.clear()
                    if stop:
                        self._tell_workers(signal.SIGTERM)
                for worker in self.processes:
                    worker.process.join(0.5 / len(self.processes))

        def _tell_workers(self, sig: int) -> None:
            for worker in self.processes:
                if worker.process.pid is not None and worker.process.is_alive():
                    os.kill(worker.process.pid, sig)

    Supervisor(config, sockets=[config.bind_socket()]).run()


def config_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"invalid: {problem}", file=sys.stderr)
        return 1
    print(
        f"ok: {len(config.providers)} providers, {len(config.deployments)} deployments, "
        f"{len(config.model_groups)} model groups"
    )
    for name, group in config.model_groups.items():
        print(f"  {name}: {' -> '.join(group.deployments)}")
    for path, var in named_env_vars(config):
        if not os.environ.get(var):
            print(f"warning: {path}: environment variable {var} is not set here; serve needs it", file=sys.stderr)
    return 0


def route_explain(args: argparse.Namespace) -> int:
    """Ask a running gateway for its plan: live breaker and latency state included."""
    import json
    import urllib.error
    import urllib.request

    body = args.body
    if body.startswith("@"):
        with open(body[1:]) as f:
            body = f.read()
    elif not body.lstrip().startswith("{"):
        body = json.dumps({"model": body, "messages": [{"role": "user", "content": args.prompt}]})
    key = args.key or os.environ.get("OPENAI_API_KEY", "")
    url = args.url.rstrip("/")
    if not url.endswith("/v1"):
        url += "/v1"
    request = urllib.request.Request(
        url + "/route/explain",
        data=body.encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            plan = json.load(resp)
    except urllib.error.HTTPError as exc:
        print(f"error {exc.code}: {json.load(exc)['error']['message']}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot reach the gateway at {url}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(plan, indent=2))
        return 0
    for p in plan["plans"]:
        print(f"{p['model']} ({p['strategy']}), needs: {', '.join(p['needs'])}")
        for d in p["deployments"]:
            mark = "->" if d["decision"] == "ordered" else "  x"
            print(f"  {mark} {d['deployment']}: {d['reason']}")
    print("would attempt: " + " -> ".join(plan["would_attempt"]) if plan["would_attempt"] else "would attempt: nothing")
    return 0


def db_upgrade(args: argparse.Namespace) -> int:
    from ..storage import migrate_sync
    from ..storage.service import StorageService

    service = StorageService(load_config(args.config))
    if not service.enabled or service.url is None:
        print("no storage configured (storage.url / storage.url_env): nothing to upgrade", file=sys.stderr)
        return 1
    print(f"database at revision {migrate_sync(service.url)}")
    return 0


def _config_default() -> dict[str, Any]:
    """--config defaults to $MULTIHOME_CONFIG, and is required only when that is not set."""
    default = os.environ.get(CONFIG_ENV)
    return {"default": default, "required": not default}


def add_commands(sub: argparse._SubParsersAction) -> None:
    serve_ = sub.add_parser("serve", help="run the gateway")
    serve_.add_argument("--config", "-c", **_config_default(), help="YAML config file (default: $MULTIHOME_CONFIG)")
    serve_.add_argument("--host", help="listen address (default: server.host)")
    serve_.add_argument("--port", type=int, help="listen port (default: server.port)")
    serve_.add_argument("--workers", type=int, default=1, help="worker processes (one per core)")
    serve_.add_argument(
        "--drain-timeout",
        type=float,
        metavar="SECONDS",
        help="on SIGTERM, how long calls in flight may still finish before open streams are ended with an error "
        "(default: server.drain_timeout_s)",
    )
    serve_.add_argument(
        "--log-level",
        default="info",
        choices=LEVELS,
        help="info (default): a start-up line and one access-log line per call; warning: problems only",
    )
    serve_.set_defaults(func=serve)

    route = sub.add_parser("route", help="inspect routing")
    route_sub = route.add_subparsers(dest="route_command", required=True)
    explain = route_sub.add_parser("explain", help="show the plan a running gateway would follow, without sending")
    explain.add_argument("body", help="a model group name, a JSON request body, or @file.json")
    explain.add_argument("--prompt", default="hello", help="user message when BODY is a model name")
    # The same default as the admin commands': README's `export MULTIHOME_URL=...` then `route explain` must
    # reach that gateway, not the default port.
    explain.add_argument(
        "--url",
        default=os.environ.get("MULTIHOME_URL", "http://127.0.0.1:4000"),
        help="gateway base URL (default: $MULTIHOME_URL, else http://127.0.0.1:4000)",
    )
    explain.add_argument("--key", help="gateway API key (default: $OPENAI_API_KEY)")
    explain.add_argument("--json", action="store_true", help="print the raw explanation")
    explain.set_defaults(func=route_explain)

    db = sub.add_parser("db", help="the gateway's database").add_subparsers(dest="db_command", required=True)
    upgrade = db.add_parser("upgrade", help="bring the database schema to this version (idempotent)")
    upgrade.add_argument("--config", "-c", **_config_default(), help="YAML config file (default: $MULTIHOME_CONFIG)")
    upgrade.set_defaults(func=db_upgrade)

    config = sub.add_parser("config", help="work with config files")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file")
    check.add_argument("file")
    check.set_defaults(func=config_check)
