"""Run a simulator on its own event loop in a background thread.

For synchronous callers (pytest, the ``openai`` SDK's sync client, benchmarks driving another
process): the simulator keeps serving while the caller blocks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

from .config import SimulatorConfig
from .loop import new_event_loop
from .server import Simulator, start_simulator


class ThreadedSimulator:
    def __init__(self, sim: Simulator, loop: asyncio.AbstractEventLoop, thread: threading.Thread):
        self.sim = sim
        self.loop = loop
        self.thread = thread
        self.config = sim.config
        self.url = sim.url
        self.port = sim.port
        self.state = sim.state

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 5.0) -> Any:
        """Run ``fn(*args)`` on the simulator's loop (so state changes never race a request)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as e:  # hand any failure back to the caller's thread
                fut.set_exception(e)

        self.loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    def set_fault(self, fault: Any) -> Any:
        return self.call(self.state.set_fault, fault)

    def clear_faults(self) -> None:
        self.call(self.state.clear_faults)

    def reset(self) -> None:
        self.call(self.state.reset)

    def stats(self) -> dict[str, int]:
        return self.call(self.state.stats.to_dict)

    def requests(self, limit: int | None = None) -> list[dict[str, Any]]:
        return self.call(self.state.requests, limit)

    def close(self, timeout: float = 5.0) -> None:
        if not self.loop.is_closed() and self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.sim.close(), self.loop).result(timeout)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)

    def __enter__(self) -> ThreadedSimulator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def start_simulator_in_thread(config: SimulatorConfig, timeout: float = 5.0) -> ThreadedSimulator:
    loop = new_event_loop()
    started: concurrent.futures.Future = concurrent.futures.Future()

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            sim = loop.run_until_complete(start_simulator(config))
        except BaseException as e:
            started.set_exception(e)
            loop.close()
            return
        started.set_result(sim)
        try:
            loop.run_forever()
        finally:
            # Let cancelled request tasks run their bookkeeping before the loop goes away.
            pending = asyncio.all_tasks(loop)
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    thread = threading.Thread(target=main, name=f"sim-{config.name}", daemon=True)
    thread.start()
    sim = started.result(timeout)
    return ThreadedSimulator(sim, loop, thread)
