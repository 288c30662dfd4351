"""live_config.LiveConfig.start: a served process ignores SIGHUP until its start-up installs the reload
(app.served_app), so a change to the file made while it started would be lost. With `serve --workers`, an
admin reload answered by a worker already up reaches a worker still starting that way; that worker then
served the old file for good. Start-up applies a file changed since it was read."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import pytest

from builders import api_keys, single, yaml_text
from multihome.app import CONFIG_ENV, app_from_env, served_app
from multihome.live_config import read_config

pytestmark = pytest.mark.anyio


def _file(tmp_path: Path, group: str) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml_text(single(server=api_keys("K"), names=("p", "d", group))))
    return str(path)


async def _started(app):
    inbox: asyncio.Queue[dict] = asyncio.Queue()
    outbox: asyncio.Queue[dict] = asyncio.Queue()
    lifespan = asyncio.ensure_future(app({"type": "lifespan"}, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await asyncio.wait_for(outbox.get(), 60))["type"] == "lifespan.startup.complete"

    async def stop() -> None:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await asyncio.wait_for(outbox.get(), 60))["type"] == "lifespan.shutdown.complete"
        await asyncio.wait_for(lifespan, 60)

    return stop


@pytest.fixture
def hup_restored():
    before = signal.getsignal(signal.SIGHUP)
    yield
    signal.signal(signal.SIGHUP, before)


async def test_a_file_changed_while_the_process_started_is_applied_at_start(
    tmp_path, monkeypatch, caplog, hup_restored
):
    monkeypatch.setenv("K", "client-key")
    path = _file(tmp_path, "old")
    config, version = read_config(path)
    app = served_app(config, None, path, version=version)
    _file(tmp_path, "new")  # meanwhile: an admin reload on another worker, whose SIGHUP this one ignored
    with caplog.at_level(logging.INFO, "multihome"):
        stop = await _started(app)
    try:
        assert set(app.catalog.groups) == {"new"}
        assert "config reload: applied" in caplog.text
    finally:
        await stop()


async def test_a_workers_process_catches_up_too(tmp_path, monkeypatch, hup_restored):
    monkeypatch.setenv("K", "client-key")
    monkeypatch.setenv(CONFIG_ENV, _file(tmp_path, "old"))  # as `serve --workers` hands each worker the file
    app = app_from_env()
    _file(tmp_path, "new")
    stop = await _started(app)
    try:
        assert set(app.catalog.groups) == {"new"}
    finally:
        await stop()


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
async def test_an_unchanged_file_is_not_reloaded_at_start(tmp_path, monkeypatch, caplog, hup_restored, newline):
    # CRLF: the file is parsed (and its version taken) as text, whose newlines Python reads as "\n"; a start-up
    # that compared that with the digest of its bytes reloaded a file written on Windows at every start.
    monkeypatch.setenv("K", "client-key")
    path = _file(tmp_path, "same")
    Path(path).write_bytes(Path(path).read_bytes().replace(b"\n", newline))
    config, version = read_config(path)
    app = served_app(config, None, path, version=version)
    with caplog.at_level(logging.INFO, "multihome"):
        stop = await _started(app)
    try:
        assert set(app.catalog.groups) == {"same"} and "config reload" not in caplog.text
    finally:
        await stop()
