"""Reloading the YAML config in a running gateway (SIGHUP, or `POST /admin/v1/config/reload`).

Providers, deployments, model groups and the config's budgets and rate limits change live: the new
objects replace the old ones in one step, and a call under way keeps the ones it resolved, so it
finishes on the config it started with. Every other section is read at start-up only (it opened
connections, files or keys): a file that changes one is refused, naming it, and the running config
keeps serving, as it does for a file that does not load (docs/serving.md "Reloading the config").
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgspec

from .config import Config, ConfigError, parse_config
from .metering.prices import PriceTable
from .metering.service import reservation_config

log = logging.getLogger("multihome.config")

LIVE_SECTIONS = ("providers", "deployments", "model_groups")  # and metering.budgets / metering.rate_limits
RESTART = "read at start-up only: restart the gateway to change it"


def restart_needed(old: Config, new: Config, *, metered: bool = True) -> list[str]:
    """What in `new` a running gateway cannot apply (empty: the reload can go ahead), as ConfigError problems."""
    problems = []
    for name in (f.name for f in msgspec.structs.fields(Config)):
        if name in LIVE_SECTIONS:
            continue
        before, after = getattr(old, name), getattr(new, name)
        if name == "server":  # the drain deadline may come from --drain-timeout: not compared
            after = msgspec.structs.replace(after, drain_timeout_s=before.drain_timeout_s)
        elif name == "metering":
            after = msgspec.structs.replace(after, budgets=before.budgets, rate_limits=before.rate_limits)
        if before != after:
            problems.append(f"{name}: changed; this section is {RESTART}")
    if not metered and (new.metering.budgets or new.metering.rate_limits):
        problems.append(
            f"metering: budgets and rate limits on a gateway started without storage or limits are {RESTART}"
        )
    for name in sorted(set(old.providers) | set(new.providers)):
        before_p, after_p = old.providers.get(name), new.providers.get(name)
        stored = any(p is not None and p.auth.api_key_from == "store" for p in (before_p, after_p))
        if stored and before_p != after_p:  # its key was opened from the sealed store at start-up
            problems.append(f"providers.{name}: a provider with auth.api_key_from: store is {RESTART}")
    return problems


@dataclass
class Reloadable:
    """The long-lived objects a reload updates (app.py builds them); None where the gateway runs without one."""

    catalog: Any  # routing.catalog.Catalog
    gate: Any  # api.policy_gate.PolicyGate
    prober: Any  # routing.health.HealthProber
    admin: Any  # api.admin.route.Services: which model groups admin-made keys and policies may name
    metering: Any = None  # metering.service.Metering, when limits or usage are metered
    metrics: Any = None  # observability.metrics.Metrics


class LiveConfig:
    """The running config and its reload. A service: under `multihome serve` it reloads on SIGHUP."""

    def __init__(self, config: Config, path: str | None = None, parts: Reloadable | None = None) -> None:
        self.config = config
        self.parts = parts  # app.py sets it once the parts exist (the admin API it serves is one of them)
        self.path = path  # the file to read again (None: the gateway was not started from a file)
        self.on_signals = False  # set by app.served_app: a served gateway reloads on SIGHUP
        self.supervisor: int | None = None  # `serve --workers`: the parent, which passes SIGHUP to every worker
        # What `serve` changes in the config it read (a --workers process's settings), done to a reloaded one too.
        self.adjust: Callable[[Config], None] | None = None
        self.version = _version_of(path) if path is not None else None
        self._lock = asyncio.Lock()  # one reload at a time
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self.on_signals and self.path is not None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_hup)
            # A SIGHUP that came while this process was starting was ignored (app.served_app): with
            # `--workers`, an admin reload answered by a worker already up reaches the others that way.
            # So a file changed since it was read is applied now, as that SIGHUP would have applied it.
            if await asyncio.to_thread(_version_of, self.path) not in (self.version, None):
                await self._reload_logged()

    async def close(self) -> None:
        if self.on_signals and self.path is not None:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a late SIGHUP must not kill a draining process

    def _on_hup(self) -> None:
        task = asyncio.get_running_loop().create_task(self._reload_logged())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload_logged(self) -> None:
        try:
            out = await self.reload()
        except ConfigError as exc:
            log.error("config reload refused, the running config keeps serving: %s", "; ".join(exc.problems))
        except Exception:
            log.exception("config reload failed, the running config keeps serving")
        else:
            log.info("config reload: %s", "applied" if out["changed"] else "no change")

    async def reload_everywhere(self) -> dict[str, Any]:
        """The admin call's reload: this process, then (with `--workers`) every worker. Logged as SIGHUP's
        is, so the log shows each worker's reload whichever way it came."""
        out = await self.reload(everywhere=True)
        log.info("config reload: %s (admin API)", "applied" if out["changed"] else "no change")
        return out

    async def reload(self, *, everywhere: bool = False) -> dict[str, Any]:
        """Read the file again and apply it, or raise ConfigError (nothing applied). `everywhere`: with
        `--workers`, after this worker applied it, the parent passes SIGHUP to every worker."""
        if self.path is None or self.parts is None:
            raise ConfigError("the gateway was not started from a config file: there is nothing to reload")
        async with self._lock:
            text = await asyncio.to_thread(_read, self.path)
            version = _digest(text.encode())
            new = parse_config(text, source=self.path)
            if self.adjust is not None:
                self.adjust(new)
            parts = self.parts
            problems = restart_needed(self.config, new, metered=parts.metering is not None)
            if problems:
                raise ConfigError(*problems)
            new.server = self.config.server  # equal but for a --drain-timeout override, which stays
            changed = new != self.config
            if changed:
                await _apply(parts, new)
                self.config = new
            self.version = version
        if everywhere and self.supervisor is not None:
            os.kill(self.supervisor, signal.SIGHUP)  # the others read the same file; this one finds no change
        return {
            "object": "config.reload",
            "id": version,
            "changed": changed,
            "providers": len(new.providers),
            "deployments": len(new.deployments),
            "model_groups": sorted(new.model_groups),
        }


async def _apply(p: Reloadable, new: Config) -> None:
    staged = p.catalog.stage(new)  # what may fail (an adapter's settings) fails before anything changed
    if p.metering is not None:
        # Prices first: a call under way on a deployment the file removed is still priced when it ends.
        prices = PriceTable({**p.metering.prices.prices, **PriceTable.from_config(new).prices})
        await p.metering.reconfigure(reservation_config(new), prices)
    # One step, no await: a call sees either the old groups and their policy facts or the new ones.
    p.catalog.swap(staged)
    p.gate.reconfigure(p.catalog)
    p.prober.deployments = list(p.catalog.deployments.values())
    p.admin.model_groups = frozenset(p.catalog.groups)
    p.admin.providers = frozenset(new.providers)
    if p.metrics is not None:
        p.metrics.groups, p.metrics.deployments = frozenset(p.catalog.groups), frozenset(p.catalog.deployments)
        p.metrics.sources = replace(p.metrics.sources, deployments=tuple(p.catalog.deployments))


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None


def read_config(path: str) -> tuple[Config, str]:
    """The config file, and the version of the very text it was parsed from (LiveConfig.version)."""
    text = _read(path)
    return parse_config(text, source=path), _digest(text.encode())


def _version_of(path: str) -> str | None:
    """The file's version as `reload` and `read_config` take it: of its text (read as `_read` reads it, newlines
    as "\\n"), not of its bytes, which differ for a file with CRLF line ends (it was reloaded at every start)."""
    try:
        return _digest(Path(path).read_text().encode())
    except (OSError, ValueError):
        return None  # what reading it again would say is the next reload's to say


def _digest(data: bytes) -> str:
    return "cfg_" + hashlib.sha256(data).hexdigest()[:16]
