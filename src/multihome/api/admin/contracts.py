"""Admin resource: contract terms (revenue shares, committed spend), organisation-wide, org-admin only:
agreements from the config and from this API, their reports (JSON or CSV, `?at=` an ISO time)."""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import Any

from ...config.contracts import DECIMALS, Agreement, Commitment, encode_agreement, field_problems
from ...config.decimals import plain
from ...contracts.report import build_report, build_reports, to_csv
from ...contracts.service import AgreementConflict, InvalidAgreement
from ...schema import admin_fields
from ...schema.errors import ApiError, echo
from ...storage import row_reads
from .config_names import unknown_name
from .rbac import ORG
from .route import CSV_MEDIA, PREFIX, AdminCall, Needs, Route, Services, listing

C = PREFIX + "/contracts"


async def list_contracts(s: Services, c: AdminCall) -> Any:
    return listing([_view(s, a) for a in s.contracts.agreements()], s.contracts.unreadable)


async def create_contract(s: Services, c: AdminCall) -> Any:
    errs = field_problems(c.body)  # what is wrong with the body itself first, then whether its names are known
    if errs:
        raise ApiError(
            400, f"Invalid contract: {'; '.join(p.message for p in errs)}", param=errs[0].field, code="invalid_value"
        )
    _names_known(s, c.body)
    try:
        await s.contracts.create_agreement(c.body, actor=c.who.subject)
    except AgreementConflict as exc:
        raise ApiError(409, str(exc), code="conflict") from None
    except InvalidAgreement as exc:
        raise ApiError(400, f"Invalid contract: {exc}", param=exc.field, code="invalid_value") from None
    except ValueError as exc:
        raise ApiError(400, f"Invalid contract: {exc}", code="invalid_value") from None
    return _view(s, c.body)


def _names_known(s: Services, a: Agreement) -> None:
    """400 for a provider or model group the config has not (as the config's own agreements are checked): a
    name no call carries matches nothing, and the agreement would silently never accrue."""
    if s.providers is None:
        return
    named: list[tuple[str, str, frozenset[str]]] = []
    if isinstance(a, Commitment):
        named.append(("provider", a.provider, s.providers))
    else:
        named += [(f"basis.providers[{i}]", p, s.providers) for i, p in enumerate(a.basis.providers)]
        named += [(f"basis.model_groups[{i}]", g, s.model_groups) for i, g in enumerate(a.basis.model_groups)]
    for field, name, known in named:
        if name not in known:
            what = "provider" if "provider" in field else "model group"
            raise unknown_name("contract", field, name, what, known, "so no call would count towards it")


async def contracts_csv(s: Services, c: AdminCall) -> Any:
    reports = await build_reports(
        s.contracts.agreements(), s.contracts.ledger, _at(c.query), s.contracts.cfg.rate_window_days
    )
    return to_csv(reports)


async def get_contract(s: Services, c: AdminCall) -> Any:
    return _view(s, _agreement(s, c.params["id"]))


async def contract_report(s: Services, c: AdminCall) -> Any:
    return {"object": "contract.report", **(await _report(s, c)).to_dict()}


async def contract_report_csv(s: Services, c: AdminCall) -> Any:
    return to_csv([await _report(s, c)])


async def _report(s: Services, c: AdminCall) -> Any:
    at = _at(c.query)  # a bad ?at= is a 400 before the contract is looked up
    return await build_report(_agreement(s, c.params["id"]), s.contracts.ledger, at, s.contracts.cfg.rate_window_days)


def _agreement(s: Services, contract_id: str) -> Agreement:
    a: Agreement | None = s.contracts.agreement(contract_id)
    bad = s.contracts.unreadable_agreement(contract_id) if a is None else None
    if bad is not None:
        raise row_reads.unreadable("contract", bad)
    if a is None:
        raise ApiError(404, f"No contract with id '{echo(contract_id)}'. GET {C} lists them.", code="not_found")
    return a


def _view(s: Services, a: Agreement) -> dict[str, Any]:
    t = s.contracts.totals.get(a.id)
    return {
        "object": "contract",
        **encode_agreement(a),
        "accrued": plain(t.accrued) if t else "0",
        "calls": t.calls if t else 0,
    }


def _at(query: dict[str, str]) -> dt.datetime:
    value = query.get("at")
    if not value:
        return dt.datetime.now(dt.UTC)
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"at='{echo(value)}' is not an ISO 8601 time.", param="at", code="invalid_value") from None
    at = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
    found = admin_fields.moment(at, "at")  # year 1 at +05:00 would overflow the report's arithmetic
    if found is not None:
        raise ApiError(400, f"{found.message}.", param="at", code="invalid_value")
    return at


# Contracts span tenants: org-admin only. The service applies a new agreement itself (no refresh).
_NEEDS = Needs(lambda s: s.contracts.ledger, "Contracts need storage: set storage.url in the config.")
_route = partial(Route, role=ORG, needs=_NEEDS, refresh=False)
ROUTES = (
    _route("GET", C, handler=list_contracts, summary="Contract agreements with what has accrued"),
    _route(
        "POST",
        C,
        handler=create_contract,
        summary="Create a revenue-share or committed-spend agreement",
        body=Agreement,
        status=201,
        event="contract.create",
        noun="contract",
        decimals=DECIMALS,
    ),
    _route(
        "GET",
        C + "/report.csv",
        handler=contracts_csv,
        summary="Every contract's report as CSV",
        query=("at",),
        media=CSV_MEDIA,
    ),
    _route("GET", C + "/{id}", handler=get_contract, summary="One agreement"),
    _route(
        "GET",
        C + "/{id}/report",
        handler=contract_report,
        query=("at",),
        summary="Accrued, remaining to cap, projected date, burn vs plan",
    ),
    _route(
        "GET",
        C + "/{id}/report.csv",
        handler=contract_report_csv,
        summary="One contract's report as CSV",
        query=("at",),
        media=CSV_MEDIA,
    ),
)
