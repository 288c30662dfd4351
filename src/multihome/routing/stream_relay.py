"""Forward an upstream SSE stream chunk by chunk, reading only what must be read.

Each event is checked (valid JSON, finish reason, usage) and re-framed; nothing buffers the
whole stream. A stream that breaks after the first byte, or that the gateway cuts because it is
shutting down (`cut`), ends with an OpenAI-shaped error event, which the SDK raises, never with a
silent truncation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
from pyqwest import Response

from ..providers.base import Adapter, StreamDecoder
from ..providers.gate import Gate
from ..providers.sse import DONE, frame
from ..providers.transport import UPSTREAM_ERRORS
from ..schema.errors import ErrorBody, ErrorEnvelope
from ..schema.peek import Usage, arguments_chars, mended_peek, peek_decoder


class StreamBroken(Exception):
    """The upstream stream failed; `label` is the attempt outcome."""

    def __init__(self, label: str, detail: str) -> None:
        super().__init__(detail)
        self.label = label


class StreamCut(Exception):
    """The gateway ended the stream itself (its drain deadline); `code` goes in the error event."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.code = code


_closing: set[asyncio.Task[None]] = set()  # closes under way (the loop keeps only weak references to tasks)


def close_call(call: Response, gate: Gate | None = None) -> None:
    """Close a streamed call's connection (not returned to the pool: its answer may be unread), from
    code that cannot await: pyqwest's close is a coroutine, so it runs as a task of its own. The call's
    permit of `gate` is given back once the close is done (the connection is gone by then)."""
    task = asyncio.ensure_future(call.aclose())
    _closing.add(task)
    task.add_done_callback(_closing.discard)
    if gate is not None:
        task.add_done_callback(lambda _: gate.give())


def error_event(message: str, code: str) -> bytes:
    body = ErrorEnvelope(ErrorBody(message=message, type="server_error", param=None, code=code))
    return frame(msgspec.json.encode(body))


class StreamRelay:
    def __init__(
        self,
        resp: Response,
        adapter: Adapter,
        upstream_model: str,
        deployment: str,
        forward_usage: bool,
        decoder: StreamDecoder | None = None,
        gate: Gate | None = None,
    ) -> None:
        self._call: Response | None = resp  # None once closed
        self._gate = gate  # the call's permit (its pool's max_connections), None once given back
        self._reader = resp.content
        self._eof = False  # the whole answer read: its connection went back to the pool by itself
        self._cut: StreamCut | None = None
        self._reading: asyncio.Task[object] | None = None  # the task in a read, which cut() wakes
        self._in_read = False
        self._adapter = adapter
        # The adapter's chat stream, unless the request was another wire form (a native Responses call).
        self._decoder = decoder if decoder is not None else adapter.stream_decoder(upstream_model)
        self._chat = decoder is None  # only a chat stream has chunks the adapter may hide (skip_stream_chunk)
        self._forward_usage = forward_usage
        self.deployment = deployment
        self.usage: Usage | None = None
        self.finish_reasons: list[str] = []
        self.events = 0
        self.done = False
        self.error: str | None = None
        self._produced = False  # whether any chunk beyond the role-only preamble has been seen
        self.content_chars = 0  # for a usage estimate when the upstream reports none
        self.tool_calls: list[tuple[str, str]] = []  # (name, id) as the calls start

    @property
    def start_usage(self) -> Usage | None:
        """The prompt's usage as the upstream reported it when its stream began (an Anthropic Messages stream's
        message_start: providers/anthropic/stream.py), None from an upstream that reports usage only at the end."""
        return getattr(self._decoder, "start_usage", None)  # only the decoders that know it have it

    async def first(self) -> bytes:
        """Read until the upstream has produced something (not just the role preamble).

        Raises StreamBroken so the caller can fail over: nothing has reached the client yet.
        """
        held = []
        while True:
            data = await self._read()
            out = self._process(data)
            if not data and not self._produced:
                raise StreamBroken("stream_ended_early", "upstream stream ended before producing output")
            if self.error:
                raise StreamBroken("malformed_stream", self.error)
            held.append(out)
            if self._produced:
                return b"".join(held)
            if self.done:
                raise StreamBroken("stream_ended_early", "upstream stream finished without output")

    async def rest(self) -> AsyncIterator[bytes]:
        # The task that reads from here on: cut() wakes it (once per stream, not per read).
        self._reading = asyncio.current_task()
        while not self.done:
            try:
                data = await self._read()
            except StreamBroken as exc:
                yield self._broken(exc.label, str(exc))
                return
            except StreamCut as exc:
                yield self._end(
                    exc.code,
                    f"The stream from deployment '{self.deployment}' was ended after {self.events} events: {exc}; "
                    "the answer is incomplete. Retry the request.",
                )
                return
            out = self._process(data)
            if out:
                yield out
            if self.error:
                yield self._broken("malformed_stream", self.error)
                return
            if not data and not self.done:
                yield self._broken("stream_interrupted", "upstream stream ended before it was complete")
                return

    def close(self) -> None:
        call, self._call = self._call, None
        if call is not None and not self._eof:
            gate, self._gate = self._gate, None
            close_call(call, gate)

    def cut(self, reason: str, code: str) -> None:
        """End the stream at its next read with an error event saying `reason` (wakes a read in progress)."""
        if self.done or self._cut is not None:
            return
        self._cut = StreamCut(reason, code)
        # pyqwest's read cannot be handed an exception: the reading task is cancelled, and _read turns
        # that one cancellation into the cut (a cancellation of the task by anyone else stays one).
        if self._reading is not None and self._in_read:
            self._reading.cancel()

    async def _read(self) -> bytes:
        if self._cut is not None:
            raise self._cut
        self._in_read = True
        try:
            chunk = await anext(self._reader)
        except StopAsyncIteration:
            self._eof = True
            gate, self._gate = self._gate, None
            if gate is not None:
                gate.give()  # the whole answer read: its connection is back in the pool
            return b""
        except asyncio.CancelledError:
            task = self._reading
            if self._cut is not None and task is not None and task.uncancel() == 0:
                raise self._cut from None
            raise
        except (*UPSTREAM_ERRORS, TimeoutError, RuntimeError) as exc:  # RuntimeError: the reader was closed
            label = "timeout" if isinstance(exc, TimeoutError) else "stream_interrupted"
            raise StreamBroken(label, f"upstream stream failed: {type(exc).__name__}") from None
        finally:
            self._in_read = False
        return bytes(chunk)

    def _broken(self, label: str, detail: str) -> bytes:
        return self._end(
            label,
            f"The stream from deployment '{self.deployment}' broke after {self.events} events ({detail}); "
            "the answer is incomplete. Retry the request.",
            "upstream_" + label,
        )

    def _end(self, label: str, message: str, code: str | None = None) -> bytes:
        self.error = label
        self.close()
        return error_event(message, code or label)

    def _process(self, data: bytes) -> bytes:
        """Decode, check and re-frame what arrived; `data == b""` means the upstream reached EOF."""
        out = []
        try:
            payloads = self._decoder.feed(data) if data else self._decoder.end()
        except ValueError as exc:
            self.error = f"corrupt upstream stream frame ({exc})"
            return b""
        for payload in payloads:
            if payload == DONE:
                self.done = True
                out.append(frame(DONE))
                break
            try:
                peek = peek_decoder.decode(payload)
            except msgspec.DecodeError as exc:
                try:  # a tool call's arguments as an object, from a lenient server: relayed as OpenAI's string
                    payload, peek = mended_peek(payload, exc)
                except msgspec.DecodeError:
                    self.error = f"event {self.events + 1} is not valid JSON"
                    break
            if peek.has_error:
                # An upstream error event ends the stream; pass it on so the SDK raises it.
                self.done = True
                self.error = "upstream_error_event"
                out.append(frame(payload))
                break
            if self._chat and self._adapter.skip_stream_chunk(peek):
                continue
            self.events += 1
            if not self._produced and not peek.is_preamble:
                self._produced = True
            if peek.usage is not None:
                self.usage = peek.usage
                if not peek.choices and not self._forward_usage:
                    continue
            elif peek.response is not None and peek.response.usage is not None:
                self.usage = peek.response.usage  # a Responses stream's terminal event
            if peek.item is not None and peek.type == "response.output_item.added":
                self.tool_calls.extend(peek.item.call())  # a Responses stream's function call, as it starts
            elif peek.type and len(peek.delta) > 2 and "audio" not in peek.type:  # (a chat chunk has no type)
                # A Responses stream's output as it comes (text, arguments, a summary: its JSON string, quotes
                # and escapes included), for the estimate of a stream that ends before its usage. Not audio.
                self.content_chars += len(peek.delta) - 2
            calls = False
            for choice in peek.choices:
                if choice.finish_reason:
                    self.finish_reasons.append(choice.finish_reason)
                delta = choice.delta
                if delta is not None:
                    # Every kind of output is counted for the estimate of a stream cut before its usage (the
                    # client left): its text, its tool calls' arguments, a refusal.
                    if delta.content:
                        self.content_chars += len(delta.content)
                    if delta.tool_calls:
                        calls = True
                        self.content_chars += arguments_chars(delta.tool_calls)
                    elif delta.refusal:
                        self.content_chars += len(delta.refusal)
            if calls:
                self.tool_calls.extend(peek.tool_calls())
            out.append(frame(payload))
        return b"".join(out)
