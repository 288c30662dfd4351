"""Admin API for contract terms, `/admin/v1/contracts...`: organisation-wide, org-admin only.

    GET  /admin/v1/contracts                     agreements (config and API-created) with totals
    POST /admin/v1/contracts                     create an agreement (body: {"kind": "revenue_share"|"commitment", ...})
    GET  /admin/v1/contracts/report.csv          every contract's report as CSV
    GET  /admin/v1/contracts/{id}                one agreement
    GET  /admin/v1/contracts/{id}/report         accrued, remaining, projected date, burn vs plan (?at=ISO time)
    GET  /admin/v1/contracts/{id}/report.csv     the same as CSV

Mounted beside `AdminRoutes`: the gateway sends paths for which `handles(path)` is true here.
"""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import parse_qs

import msgspec

from ..config.contracts import Agreement, encode_agreement
from ..contracts.report import build_report, build_reports, to_csv
from ..contracts.service import AgreementConflict, ContractsService
from ..schema.principal import Principal
from ..schema import admin_fields
from ..schema.decoding import decode_body
from ..schema.errors import ApiError
from .admin_rbac import ORG, authorize
from .asgi import JSON, read_body, send_bytes

P = "/admin/v1/contracts"
CSV = (b"content-type", b"text/csv; charset=utf-8")
_ID = r"(?P<id>[A-Za-z0-9_\-]+)"
ROUTES = [  # (method, pattern, handler, summary)
    ("GET", re.compile(f"^{P}$"), "list", "Contract agreements with what has accrued"),
    ("POST", re.compile(f"^{P}$"), "create", "Create a revenue-share or committed-spend agreement"),
    ("GET", re.compile(rf"^{P}/report\.csv$"), "all_csv", "Every contract's report as CSV"),
    ("GET", re.compile(f"^{P}/{_ID}$"), "get", "One agreement"),
    ("GET", re.compile(f"^{P}/{_ID}/report$"), "report", "Accrued, remaining to cap, projected date, burn vs plan"),
    ("GET", re.compile(rf"^{P}/{_ID}/report\.csv$"), "report_csv", "One contract's report as CSV"),
]


class ContractRoutes:
    def __init__(self, service: ContractsService) -> None:
        self.service = service

    @staticmethod
    def handles(path: str) -> bool:
        return path == P or path.startswith(P + "/")

    async def handle(self, scope, receive, send, request_id: bytes, principal: Principal) -> None:
        method, path = scope["method"], scope["path"]
        handler, params = _match(method, path)
        authorize(principal, ORG, None)  # contracts span tenants: org-admin only
        if self.service.ledger is None:
            raise ApiError(501, "Contracts need storage: set storage.url in the config.", code="storage_not_configured")
        query = parse_qs(scope.get("query_string", b"").decode())
        if handler == "create":
            raw = await read_body(scope, receive, 1 << 20)
            body = decode_body(raw, Agreement)
            try:
                await self.service.create_agreement(body, actor=principal.subject)
            except AgreementConflict as exc:
                raise ApiError(409, str(exc), code="conflict") from None
            except ValueError as exc:
                raise ApiError(400, f"Invalid contract: {exc}", code="invalid_value") from None
            return await _json(send, 201, _view(self.service, body), request_id)
        if handler == "list":
            return await _json(send, 200, {"object": "list", "data": [_view(self.service, a)
                                                                      for a in self.service.agreements()]}, request_id)
        now = _at(query)
        window = self.service.cfg.rate_window_days
        if handler == "all_csv":
            reports = await build_reports(self.service.agreements(), self.service.ledger, now, window)
            return await send_bytes(send, 200, to_csv(reports).encode(), [CSV, (b"x-request-id", request_id)])
        a = self.service.agreement(params["id"])
        if a is None:
            raise ApiError(404, f"No contract with id {params['id']!r}. GET {P} lists them.", code="not_found")
        if handler == "get":
            return await _json(send, 200, _view(self.service, a), request_id)
        rep = await build_report(a, self.service.ledger, now, window)
        if handler == "report":
            return await _json(send, 200, {"object": "contract.report", **rep.to_dict()}, request_id)
        await send_bytes(send, 200, to_csv([rep]).encode(), [CSV, (b"x-request-id", request_id)])


def _view(service: ContractsService, a: Agreement) -> dict:
    t = service.totals.get(a.id)
    return {"object": "contract", **encode_agreement(a), "accrued": str(t.accrued) if t else "0",
            "calls": t.calls if t else 0}


async def _json(send, status: int, obj, request_id: bytes) -> None:
    await send_bytes(send, status, msgspec.json.encode(obj), [JSON, (b"x-request-id", request_id)])


def _at(query) -> dt.datetime:
    values = query.get("at")
    if not values:
        return dt.datetime.now(dt.timezone.utc)
    try:
        at = dt.datetime.fromisoformat(values[0])
    except ValueError:
        raise ApiError(400, f"at={values[0]!r} is not an ISO 8601 time.", param="at", code="invalid_value") from None
    at = at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)
    found = admin_fields.moment(at, "at")  # year 1 at +05:00 would overflow the report's arithmetic
    if found is not None:
        raise ApiError(400, f"{found.message}.", param="at", code="invalid_value")
    return at


def _match(method: str, path: str) -> tuple[str, dict[str, str]]:
    allowed = []
    for m, pattern, handler, _ in ROUTES:
        found = pattern.match(path)
        if found:
            if m == method:
                return handler, found.groupdict()
            allowed.append(m)
    if allowed:
        raise ApiError(405, f"Method {method} is not allowed on {path}; use {' or '.join(allowed)}.",
                       code="method_not_allowed")
    raise ApiError(404, f"Unknown admin endpoint {method} {path}.", code="unknown_url")
