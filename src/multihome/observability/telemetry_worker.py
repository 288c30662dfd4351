"""The telemetry worker process: `python -m multihome.observability.telemetry_worker`.

Started by the gateway (`telemetry.Telemetry`), one per gateway process. Reads length-prefixed
msgpack frames on stdin — first the setup (config, endpoint, export headers, the deployment
table, the provider kinds' telemetry names), then one CallRecord per frame — and feeds them to the OpenTelemetry SDK pipeline.
Prints READY once the pipeline is built. At end of input (the gateway closed the pipe, or died)
it flushes within shutdown_timeout_s and exits.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import msgspec

from ..accounting.record import CallRecord
from ..config import Telemetry as TelemetryConfig
from .genai import GenAIMapper, Upstream
from .json_log import JsonFormatter


class Setup(msgspec.Struct):
    config: TelemetryConfig
    endpoint: str
    headers: dict[str, str]
    upstreams: dict[str, tuple[str, str, str | None, int | None]]
    primaries: dict[str, str]
    provider_names: dict[str, str]
    log_format: str = "text"  # server.log_format: this process's warnings look like the gateway's lines


def read_frame(stream) -> bytes | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    size = int.from_bytes(head, "big")
    body = stream.read(size)
    return body if len(body) == size else None


def main() -> int:
    # Ctrl-C reaches the whole process group: the gateway decides when this process ends (by
    # closing the pipe), so the calls it already handed over are still flushed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin = sys.stdin.buffer
    frame = read_frame(stdin)
    if frame is None:
        return 1
    setup = msgspec.msgpack.decode(frame, type=Setup)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if setup.log_format == "json":
        logging.getLogger().handlers[0].setFormatter(JsonFormatter())
    mapper = GenAIMapper({k: Upstream(*v) for k, v in setup.upstreams.items()}, setup.primaries, setup.provider_names)

    from .otel_pipeline import Pipeline  # the SDK: imported here, in this process only

    pipeline = Pipeline(setup.config, mapper, endpoint=setup.endpoint, headers=setup.headers)
    out = sys.stdout
    out.write("READY\n")
    out.flush()
    sys.stdout = sys.stderr  # nothing else goes to the pipe the gateway no longer reads
    decode = msgspec.msgpack.Decoder(CallRecord).decode
    while (frame := read_frame(stdin)) is not None:
        try:
            call = decode(frame)
        except msgspec.DecodeError:
            logging.getLogger("multihome.telemetry").error("telemetry worker: undecodable frame; stopping")
            break
        pipeline.record(call)
    if not pipeline.shutdown(setup.config.shutdown_timeout_s):
        logging.getLogger("multihome.telemetry").warning(
            "telemetry: the final export did not finish within %.1fs; the rest is dropped",
            setup.config.shutdown_timeout_s,
        )
    sys.stderr.flush()
    os._exit(0)  # the SDK's daemon threads may still be blocked on a collector that does not answer


if __name__ == "__main__":
    sys.exit(main())
