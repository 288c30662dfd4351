"""Start and stop one simulator inside the running event loop."""

from __future__ import annotations

import asyncio

from .app import ProviderApp
from .azure_api import AzureApp
from .config import SimulatorConfig
from .http import serve
from .openai_api import OpenAIApp
from .state import SimState

_APPS: dict[str, type[ProviderApp]] = {"openai": OpenAIApp, "azure": AzureApp}


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

    async def __aenter__(self) -> "Simulator":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


async def start_simulator(config: SimulatorConfig) -> Simulator:
    app = _APPS[config.kind](config, SimState(config.log_size))
    server = await serve(app, config.host, config.port)
    return Simulator(config, app, server)
