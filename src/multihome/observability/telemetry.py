"""OpenTelemetry export of every call (docs/telemetry.md): the gateway side.

A CallSink and a gateway service. `record` runs on the event loop and only msgpack-encodes the
CallRecord into a buffer; the buffer goes to the telemetry worker process over a pipe once per
loop iteration. The worker (`telemetry_worker.py`) runs the OpenTelemetry SDK — spans, metrics,
BatchSpanProcessor, OTLP/HTTP — so the SDK's CPU never competes with the event loop for the GIL,
and this process never imports OpenTelemetry. Imported only when the config has `telemetry:`.

Bounded: when the worker falls behind and the pipe's backlog passes max_queue records' worth of
bytes, records are dropped and counted, never waited for. Only what CallRecord holds is sent,
and CallRecord never holds content or a secret.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

import msgspec

from ..accounting.record import CallRecord
from ..config import Config, ConfigError, env_secret
from .genai import GenAIMapper, ProviderKindInfo

log = logging.getLogger("multihome.telemetry")

_encode = msgspec.msgpack.Encoder().encode
_RECORD_BYTES = 1024  # a generous size of one encoded CallRecord, to turn max_queue into a byte bound
_START_TIMEOUT_S = 30.0


def parse_headers(text: str, var: str) -> dict[str, str]:
    """`k=v,k2=v2` (values may be percent-encoded, as in OTEL_EXPORTER_OTLP_HEADERS).

    Errors name the variable and the entry's position, never a value: the text is a secret."""
    headers = {}
    for i, item in enumerate(text.split(",")):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = unquote(key).strip().lower()
        if not sep or not key or any(c in key for c in " \t\r\n:"):
            raise ConfigError(f"telemetry.headers_env: entry {i + 1} of {var} is not `name=value`")
        headers[key] = unquote(value).strip()
    return headers


def _where(url: str) -> str:
    """scheme://host:port only: a URL from an environment variable may carry credentials."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port else "")


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


class Telemetry:
    def __init__(self, config, mapper: GenAIMapper, *, endpoint: str, headers: dict[str, str] | None = None) -> None:
        self.config = config  # config.Telemetry
        self.mapper = mapper
        self.endpoint = endpoint.rstrip("/")
        self._headers = headers or {}
        self._proc: asyncio.subprocess.Process | None = None
        self._pipe: asyncio.StreamWriter | None = None
        self._pending = bytearray()
        self._flush_scheduled = False
        self._max_backlog = config.max_queue * _RECORD_BYTES
        self.log_format = "text"  # server.log_format, for the worker's own lines
        self.sent = 0
        self.dropped = 0  # records not handed to the worker (backlog full, or the worker is gone)

    @classmethod
    def from_config(cls, config: Config, kinds: Mapping[str, ProviderKindInfo]) -> Telemetry:
        """`kinds`: provider kind name -> descriptor, from the composition root (see genai.py)."""
        t = config.telemetry
        assert t is not None, "only for a config with a telemetry section"
        if t.otlp_endpoint is not None:
            endpoint = t.otlp_endpoint
        else:
            assert t.otlp_endpoint_env is not None  # the config sets exactly one of the two
            endpoint = env_secret(t.otlp_endpoint_env, what="telemetry.otlp_endpoint_env")
        if not endpoint.startswith(("http://", "https://")):
            raise ConfigError(
                f"telemetry.otlp_endpoint_env: {t.otlp_endpoint_env} must hold an http:// or https:// URL"
            )
        headers = {}
        if t.headers_env:
            headers = parse_headers(env_secret(t.headers_env, what="telemetry.headers_env"), t.headers_env)
        telemetry = cls(t, GenAIMapper.from_config(config, kinds), endpoint=endpoint, headers=headers)
        telemetry.log_format = config.server.log_format
        return telemetry

    def _setup(self) -> bytes:
        ups = {name: (u.provider_name, u.model, u.address, u.port) for name, u in self.mapper.upstreams.items()}
        return _encode(
            {
                "config": self.config,
                "endpoint": self.endpoint,
                "headers": self._headers,
                "upstreams": ups,
                "primaries": self.mapper.primaries,
                "provider_names": self.mapper.provider_names,
                "log_format": self.log_format,
            }
        )

    async def start(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "multihome.observability.telemetry_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        stdin, stdout = proc.stdin, proc.stdout
        assert stdin is not None and stdout is not None  # both PIPE
        stdin.write(_frame(self._setup()))  # the export headers travel over the pipe, not argv or env
        try:
            await stdin.drain()
            line = await asyncio.wait_for(stdout.readline(), _START_TIMEOUT_S)
        except (TimeoutError, OSError):
            line = b""
        if line.strip() != b"READY":
            proc.kill()
            await proc.wait()
            raise RuntimeError("telemetry: the export worker did not start (its error is in the log above)")
        self._proc, self._pipe = proc, stdin
        log.info(
            "telemetry: exporting calls over OTLP/HTTP to %s (sample_ratio %s, worker pid %d)",
            _where(self.endpoint),
            self.config.sample_ratio,
            proc.pid,
        )

    @property
    def backlog(self) -> int:
        """Bytes of encoded calls not yet taken by the export worker (metrics: its queue depth)."""
        pipe = self._pipe
        return len(self._pending) + (pipe.transport.get_write_buffer_size() if pipe is not None else 0)

    def record(self, call: CallRecord) -> None:
        pipe = self._pipe
        if pipe is None:
            return
        if pipe.is_closing():
            self._lost()
            return
        if len(self._pending) + pipe.transport.get_write_buffer_size() > self._max_backlog:
            self.dropped += 1  # telemetry, not a ledger: never hold a request up for it
            return
        data = _encode(call)
        self._pending += len(data).to_bytes(4, "big")
        self._pending += data
        self.sent += 1
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """One pipe write per loop iteration, for every record finished in it."""
        self._flush_scheduled = False
        if not self._pending or self._pipe is None:
            return
        data, self._pending = bytes(self._pending), bytearray()
        try:
            self._pipe.write(data)
        except (OSError, RuntimeError):
            self._lost()

    def _lost(self) -> None:
        if self._pipe is not None:
            log.error("telemetry: the export worker exited; calls are no longer exported")
            self._pipe = None
        self.dropped += 1

    async def close(self) -> None:
        """End of input for the worker: it flushes within shutdown_timeout_s and exits."""
        proc, pipe = self._proc, self._pipe
        if proc is None:
            return
        self._flush()
        self._pipe = None
        deadline = self.config.shutdown_timeout_s
        try:
            if pipe is not None and not pipe.is_closing():
                pipe.write_eof()
                await asyncio.wait_for(pipe.drain(), deadline)
            await asyncio.wait_for(proc.wait(), deadline + 1.0)
        except (TimeoutError, OSError):
            log.warning("telemetry: the export worker did not finish within %.1fs; stopping it", deadline)
            proc.kill()
            await proc.wait()
        if self.dropped:
            log.warning("telemetry: %d calls were not exported (worker backlog full or worker gone)", self.dropped)
