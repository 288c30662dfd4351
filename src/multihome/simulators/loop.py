"""Event-loop choice: uvloop when installed (faster), the standard loop otherwise."""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop is optional (and absent on Windows)
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
