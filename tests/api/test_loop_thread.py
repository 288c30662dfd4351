"""At start-up the gateway tells sniffio, on the event loop's thread, that asyncio runs there: pyqwest
asks sniffio which library runs each upstream request, and the thread-local answer is a lookup where
sniffio would otherwise search for the current task (providers/transport.py `on_loop_thread`)."""

from __future__ import annotations

import asyncio
import threading

import sniffio

from builders import config, deployment, group, open_door, simulated, typed
from multihome.app import build_app


def _started_in_a_fresh_thread() -> str | None:
    seen: list[str | None] = []

    async def lifespan() -> None:
        app = build_app(
            typed(
                config(
                    server=open_door(),
                    providers={"p": simulated("openai", "http://127.0.0.1:9")},
                    deployments={"d": deployment("p", "m")},
                    model_groups={"g": group("d")},
                )
            )
        )
        inbox: asyncio.Queue = asyncio.Queue()
        sent: list[dict] = []
        for message in ({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}):
            inbox.put_nowait(message)

        async def send(message: dict) -> None:
            sent.append(message)
            if message["type"] == "lifespan.startup.complete":
                seen.append(sniffio.thread_local.name)

        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)
        assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"], sent

    thread = threading.Thread(target=asyncio.run, args=(lifespan(),))  # a thread sniffio has not seen
    thread.start()
    thread.join(60)
    assert seen, "start-up did not complete"
    return seen[0]


def test_start_up_names_asyncio_for_sniffio_on_the_loop_thread():
    assert _started_in_a_fresh_thread() == "asyncio"
