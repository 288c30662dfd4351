"""Introspection and control routes under ``/_sim/`` (not part of any provider API).

These never count as provider requests, never appear in the request log and need no auth:
the simulators listen on loopback for tests and benchmarks only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import msgspec

from .faults import FaultError, fault_from_mapping
from .http import build_response

if TYPE_CHECKING:
    from .app import ProviderApp
    from .http import Connection, Request

_JSON = b"content-type: application/json\r\n"


def _send(conn: Connection, req: Request, status: int, obj: Any) -> None:
    conn.write(build_response(status, _JSON, msgspec.json.encode(obj), close=not req.keep_alive))
    if not req.keep_alive:
        conn.finish(False)


def _bad(conn, req, message: str) -> None:
    _send(conn, req, 400, {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}})


def handle(app: ProviderApp, conn: Connection, req: Request, path: bytes, query: bytes) -> None:
    st = app.state
    method = req.method
    if path == b"/_sim/health" and method == b"GET":
        return _send(conn, req, 200, {"status": "ok", "kind": app.kind, "name": app.name})
    if path == b"/_sim/stats" and method == b"GET":
        return _send(conn, req, 200, st.stats.to_dict())
    if path == b"/_sim/requests" and method == b"GET":
        limit = None
        q = parse_qs(query.decode("latin-1"))
        if "limit" in q:
            try:
                limit = int(q["limit"][0])
            except ValueError:
                return _bad(conn, req, "limit must be an integer")
        return _send(conn, req, 200, st.requests(limit))
    if path == b"/_sim/faults":
        if method == b"GET":
            return _send(conn, req, 200, {"faults": st.faults.to_list()})
        if method == b"DELETE":
            st.clear_faults()
            return _send(conn, req, 200, {"faults": []})
        if method == b"POST":
            try:
                data = msgspec.json.decode(req.body or b"{}")
                rules = [fault_from_mapping(d) for d in (data if isinstance(data, list) else [data])]
            except (msgspec.DecodeError, FaultError) as e:
                return _bad(conn, req, f"invalid fault: {e}")
            for rule in rules:
                st.set_fault(rule)
            return _send(conn, req, 200, {"faults": st.faults.to_list()})
    if path == b"/_sim/reset" and method == b"POST":
        st.reset()
        return _send(conn, req, 200, {"reset": True})
    return _send(
        conn,
        req,
        404,
        {
            "error": {
                "message": f"unknown simulator route {method.decode()} {path.decode('latin-1')}",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
    )
