"""Start and stop one simulator inside the running event loop."""

from __future__ import annotations

import asyncio
import importlib
from typing import cast

from .app import ProviderApp
from .config import SimulatorConfig
from .http import serve
from .kinds import APPS
from .state import SimState


def _app_class(kind: str) -> type[ProviderApp]:
    module, _, cls = APPS[kind].partition(":")
    return cast("type[ProviderApp]", getattr(importlib.import_module(f"{__package__}.{module}"), cls))


class Simulator:
    """A listening simulator. ``state`` (faults, log, stats) may be used in-process."""

    def __init__(self, config: SimulatorConfig, app: ProviderApp, server: asyncio.AbstractServer):
        self.config = config
        self.app = app
        self.state = app.state
        self._server = server
        sock = server.sockets[0]
        self.host, self.port = sock.getsockname()[:2]
        host = self.host if ":" not in self.host else f"[{self.host}]"
        self.url = f"http://{host}:{self.port}"

    @property
    def name(self) -> str:
        return self.config.name

    async def close(self) -> None:
        self._server.close()
        # Drop open connections too: hanging or streaming requests would keep the loop busy.
        for conn in list(self.app.connections):
            conn.abort()
        await self._server.wait_closed()

    async def __aenter__(self) -> Simulator:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


async def start_simulator(config: SimulatorConfig) -> Simulator:
    app = _app_class(config.kind)(config, SimState(config.log_size))
    server = await serve(app, config.host, config.port)
    return Simulator(config, app, server)
