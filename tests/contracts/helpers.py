"""Real CallRecords and MeteredCalls for contract tests."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from multihome.accounting.record import CallRecord, Usage
from multihome.metering.record import MeteredCall

UTC = dt.UTC


def ts(text: str) -> float:
    """'2026-01-05T12:00' (UTC) -> unix seconds."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def metered(
    request_id: str,
    cost: str | Decimal,
    at: float,
    *,
    tenant: str = "ten_a",
    provider: str = "azure-eastus",
    model_group: str = "gpt-4o",
    currency: str = "USD",
) -> MeteredCall:
    call = CallRecord(
        request_id=request_id,
        started_at=at - 0.5,
        finished_at=at,
        endpoint="chat",
        tenant=tenant,
        subject="key_1",
        principal_source="api_key",
        key_id="key_1",
        model_group=model_group,
        deployment=f"{model_group}@{provider}",
        provider=provider,
        provider_kind="azure",
        region="eastus",
        status=200,
        outcome="ok",
        usage=Usage(prompt_tokens=100, completion_tokens=50),
        latency_ms=500.0,
        request_sha256="0" * 64,
    )
    return MeteredCall(call=call, cost=Decimal(cost), currency=currency, price_version="2026-01")
