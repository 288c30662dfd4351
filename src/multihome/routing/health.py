"""Active health probes (`routing.health_probe`): a deployment whose breaker is open is probed in
the background, so it comes back as soon as it answers again, and no client call is spent as the
half-open probe.

Every `interval_s`, each deployment with an open breaker gets one minimal request: a one-token
chat ("ping", max_tokens 1) or, for an embeddings-only deployment, a one-word embedding. Any
answer from the deployment itself (a 2xx, or a 4xx that says the probe was wrong, not the
deployment) closes the breaker on this replica and, with shared breakers, on every replica. A
decline that says the deployment is unwell (capacity, unavailable) keeps it open for another
cooldown. Closed breakers are not probed: live traffic already tells how they are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from typing import cast

from ..aio import cancel_and_wait
from ..providers.base import CAPACITY, UNAVAILABLE, UpstreamRequest
from ..providers.transport import UPSTREAM_ERRORS
from ..schema.chat import parse_chat
from ..schema.embeddings import parse_embeddings
from .breakers import CLOSED, Breakers
from .catalog import DeploymentRuntime

log = logging.getLogger("multihome.routing")
_CHAT = parse_chat(b'{"model": "probe", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}')
_EMBED = parse_embeddings(b'{"model": "probe", "input": "ping"}')


class HealthProber:
    def __init__(
        self, deployments: list[DeploymentRuntime], breakers: Breakers, interval_s: float, timeout_s: float
    ) -> None:
        self.deployments = deployments  # the catalog's DeploymentRuntime objects
        self.breakers = breakers
        self.interval = interval_s
        self.timeout = timeout_s
        self.probes = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.interval > 0:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            due = [d for d in self.deployments if self._due(d.name)]
            if due:
                await asyncio.gather(*(self.probe(d) for d in due))

    def _due(self, name: str) -> bool:
        state = self.breakers.get(name)
        return state.state != CLOSED and not state.probing  # a client call may hold the half-open slot

    async def probe(self, dep: DeploymentRuntime) -> bool | None:
        """Probe one deployment and record the outcome on its breaker; None if it cannot be probed."""
        build: Awaitable[UpstreamRequest]
        if "chat" in dep.capabilities:
            build = dep.adapter.chat_request(_CHAT, dep.upstream_model)
        elif "embeddings" in dep.capabilities:
            build = dep.adapter.embeddings_request(_EMBED, dep.upstream_model)
        else:
            return None
        state = self.breakers.get(dep.name)
        state.probing = True  # no client call becomes the half-open probe meanwhile
        self.probes += 1
        try:
            req = await build
            assert dep.session is not None  # bound by Catalog.start
            # Redirects are not followed (routing/attempts.py, _redirect) and do not count as an answer.
            client, gate = dep.session.any_client(), dep.session.gate
            # pyqwest has no per-call timeout: timing out cancels the call, which aborts its request.
            # A probe holds one of the pool's permits as a call does (max_connections).
            async with asyncio.timeout(self.timeout):
                await gate.wait()
                try:
                    resp = await client.post(req.url, req.headers, req.body)
                finally:
                    gate.give()
            body, headers = resp.content, cast(Mapping[str, str], resp.headers)  # a case-insensitive mapping
            ok = (
                resp.status < 300
                or resp.status >= 400
                and dep.adapter.classify_error(resp.status, headers, body).kind not in (CAPACITY, UNAVAILABLE)
            )
        except (TimeoutError, *UPSTREAM_ERRORS):
            ok = False
        except Exception:  # a probe must never take the prober down
            log.exception("health probe of %s failed", dep.name)
            ok = False
        finally:
            state.probing = False
        changed = self.breakers.record(dep.name, ok)
        if changed == CLOSED:
            log.info("deployment %s answers again: breaker closed by a health probe", dep.name)
        return ok
