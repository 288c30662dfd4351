"""Contract definitions (config section `contracts:` and admin API bodies).

```yaml
contracts:
  revenue_share:
    - id: rs-fabrikam-2026
      parties: [Contoso, Fabrikam]
      rate: "0.15"                 # fraction of metered cost
      basis: {tenants: [ten_a], model_groups: [gpt-4o], providers: [azure-eastus]}  # empty = all
      starts_on: 2026-01-01        # inclusive, UTC dates
      ends_on: 2026-12-31          # inclusive
      cap: "250000"                # cumulative; omit for no cap
      currency: USD
  commitments:
    - id: azure-commit-2026
      provider: azure-eastus
      amount: "1200000"
      starts_on: 2026-01-01
      ends_on: 2026-12-31
      burn: linear
```
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Literal

import msgspec

from ..schema import admin_fields as fields
from .decimals import exact, places, plain, unsigned_zero
from .errors import DATE_GOT_TIME, DATE_NOT_TIME
from .struct import Strict

_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")  # also what the admin API's URL pattern accepts
# Amounts (commitment amount, revenue-share cap) up to a quadrillion: reports round to cents in a
# 60-digit context, which larger exponents would overflow.
MAX_AMOUNT = Decimal(10**15)
# Decimal places: an accrual is cost x rate at full precision in a 60-digit context (contracts/money.py), so
# no product nor sum is ever rounded while the rate has at most 18 places (a cost has under 30 digits) and a
# cap or an amount at most 9 (nano-units, as budgets). A 100-digit rate was taken and its products rounded
# (the sum of accruals then differed from rate x the sum of costs); "1E-1000000000" as a cap underflowed
# the context to 0, so it was never reached.
RATE_PLACES = 18
AMOUNT_PLACES = 9
DECIMALS = ("rate", "cap", "amount")  # an agreement's decimal fields (a revenue share's first two, a commitment's last)


class Basis(Strict):
    """Which metered calls count. An empty list means any."""

    tenants: list[str] = msgspec.field(default_factory=list)
    model_groups: list[str] = msgspec.field(default_factory=list)
    providers: list[str] = msgspec.field(default_factory=list)


class RevenueShare(Strict, tag="revenue_share", tag_field="kind", kw_only=True):
    id: str
    parties: list[str] = msgspec.field(default_factory=list)
    rate: Decimal  # fraction of the metered cost, 0 <= rate <= 1
    basis: Basis = msgspec.field(default_factory=Basis)
    starts_on: dt.date
    ends_on: dt.date
    cap: Decimal | None = None  # cumulative over the whole agreement; None = uncapped
    currency: str = "USD"

    def __post_init__(self) -> None:
        self.rate = unsigned_zero(self.rate)
        self.cap = None if self.cap is None else unsigned_zero(self.cap)


class Commitment(Strict, tag="commitment", tag_field="kind", kw_only=True):
    id: str
    provider: str
    amount: Decimal
    starts_on: dt.date
    ends_on: dt.date
    burn: Literal["linear"] = "linear"  # planned burn: amount spread evenly over the period
    currency: str = "USD"

    def __post_init__(self) -> None:
        self.amount = unsigned_zero(self.amount)  # (a zero is refused; its message then says "0")


Agreement = RevenueShare | Commitment


class ContractsConfig(Strict):
    revenue_share: list[RevenueShare] = msgspec.field(default_factory=list)
    commitments: list[Commitment] = msgspec.field(default_factory=list)
    # Group commit: a batch is written when it reaches batch_max accruals or flush_interval_s passes.
    flush_interval_s: float = 0.05
    batch_max: int = 1000
    # How often each replica re-reads agreements and ledger totals (burn-down for routing).
    refresh_s: float = 5.0
    # Recent accrual rate for projections: the mean daily accrual over this many days.
    rate_window_days: int = 7


def problems(a: Agreement) -> list[str]:
    """What is wrong with one agreement (empty when valid)."""
    return [p.message for p in field_problems(a)]


def field_problems(a: Agreement) -> list[fields.Problem]:
    """`problems`, each with the field it is about (the admin API's `param`). A value is echoed to its first
    64 characters: an id or a currency of megabytes was repeated whole."""
    out: list[fields.Problem] = []
    name = _echo(a.id)

    def add(field: str, message: str) -> None:
        out.append(fields.Problem(field, message))

    if not _ID.match(a.id):
        add("id", f"id {name!r}: 1-64 characters from A-Z a-z 0-9 _ -")
    for day in ("starts_on", "ends_on"):
        found = fields.day(getattr(a, day), day)
        if found is not None:
            add(day, f"{name}: {found.message}")
    if a.ends_on < a.starts_on:
        add("ends_on", f"{name}: ends_on {a.ends_on} is before starts_on {a.starts_on}")
    if not re.fullmatch(r"[A-Z]{3}", a.currency):
        add("currency", f"{name}: currency must be a 3-letter ISO code, not {_echo(a.currency)!r}")
    # Stored, and held in memory by every replica: bounded like every admin-set field.
    if isinstance(a, RevenueShare):
        found = fields.strings(a.parties, "parties") or next(
            (p for k in Basis.__struct_fields__ if (p := fields.strings(getattr(a.basis, k), f"basis.{k}"))), None
        )
    else:
        found = fields.text(a.provider, "provider") if a.provider else None
    if found is not None:
        add(found.field, f"{name}: {found.message}")
    if isinstance(a, RevenueShare):
        if not a.rate.is_finite() or not Decimal(0) <= a.rate <= Decimal(1):
            add("rate", f"{name}: rate must be a fraction between 0 and 1, not {_echo(a.rate)}")
        elif places(a.rate) > RATE_PLACES:
            add("rate", f"{name}: rate has more than {RATE_PLACES} decimal places: {_echo(a.rate)}")
        if a.cap is not None and (not a.cap.is_finite() or not 0 <= a.cap <= MAX_AMOUNT):
            add("cap", f"{name}: cap must be a non-negative amount of at most {MAX_AMOUNT}, not {_echo(a.cap)}")
        elif a.cap is not None and places(a.cap) > AMOUNT_PLACES:
            add("cap", f"{name}: cap has more than {AMOUNT_PLACES} decimal places: {_echo(a.cap)}")
    else:
        if not a.amount.is_finite() or not 0 < a.amount <= MAX_AMOUNT:
            add("amount", f"{name}: amount must be positive and at most {MAX_AMOUNT}, not {_echo(a.amount)}")
        elif places(a.amount) > AMOUNT_PLACES:
            add("amount", f"{name}: amount has more than {AMOUNT_PLACES} decimal places: {_echo(a.amount)}")
        if not a.provider:
            add("provider", f"{name}: provider is required")
    return out


def _echo(value: object) -> str:
    """A value in a message: at most its first 64 characters (a 100-digit rate is not echoed whole)."""
    text = str(value)
    return text if len(text) <= 64 else text[:64] + "..."


class ContractsConfigError(ValueError):
    pass


def parse_contracts(data: object) -> ContractsConfig:
    """Convert the raw `contracts:` section (from YAML) and check it; errors name the key path."""
    found = misspelled(data)
    if found is not None:
        raise ContractsConfigError(found)
    try:
        cfg = msgspec.convert(data or {}, ContractsConfig)
    except msgspec.ValidationError as exc:
        text = str(exc)
        m = re.search(r" - at `\$(?P<path>[^`]*)`$", text)
        where = "contracts" + (m.group("path") if m else "")
        what = text[: m.start()] if m else text
        if what == DATE_GOT_TIME:
            what += DATE_NOT_TIME
        raise ContractsConfigError(f"{where}: {what}") from None
    check(cfg)
    return cfg


def misspelled(data: object) -> str | None:
    """The first decimal (`DECIMALS`) of the raw `contracts:` section not spelled as JSON writes a number, with
    its key path (None: none): read with Decimal(), a rate of "0_1" would be 1."""
    sections = data if isinstance(data, dict) else {}
    for section in ("revenue_share", "commitments"):
        items = sections.get(section)
        for i, item in enumerate(items if isinstance(items, list) else []):
            for field in DECIMALS:
                value = item.get(field) if isinstance(item, dict) else None
                if value is None:
                    continue
                try:
                    exact(value)
                except ValueError as exc:
                    return f"contracts.{section}[{i}].{field}: {exc}"
    return None


def check(cfg: ContractsConfig, providers: set[str] | None = None, model_groups: set[str] | None = None) -> None:
    seen: set[str] = set()
    sections: tuple[tuple[str, Sequence[Agreement]], ...] = (
        ("revenue_share", cfg.revenue_share),
        ("commitments", cfg.commitments),
    )
    for section, items in sections:
        for i, a in enumerate(items):
            where = f"contracts.{section}[{i}]"
            errs = problems(a)
            if errs:
                raise ContractsConfigError(f"{where}: {errs[0]}")
            if a.id in seen:
                raise ContractsConfigError(f"{where}.id: duplicate contract id {a.id!r}")
            seen.add(a.id)
            if providers is not None and isinstance(a, Commitment) and a.provider not in providers:
                raise ContractsConfigError(f"{where}.provider: unknown provider {a.provider!r}")
            if isinstance(a, RevenueShare):
                # A name no call can carry matches nothing: the agreement would silently never accrue.
                for field, known in (("providers", providers), ("model_groups", model_groups)):
                    for j, name in enumerate(getattr(a.basis, field)):
                        if known is not None and name not in known:
                            what = field[:-1].replace("_", " ")
                            raise ContractsConfigError(f"{where}.basis.{field}[{j}]: unknown {what} {name[:64]!r}")
    if cfg.flush_interval_s <= 0 or cfg.batch_max < 1 or cfg.refresh_s <= 0 or cfg.rate_window_days < 1:
        raise ContractsConfigError(
            "contracts: flush_interval_s, batch_max, refresh_s, rate_window_days must be positive"
        )


def agreements_of(cfg: ContractsConfig) -> list[Agreement]:
    return [*cfg.revenue_share, *cfg.commitments]


def encode_agreement(a: Agreement) -> dict:
    """An agreement as JSON, its decimals in plain notation ("1E-18" is "0.000000000000000001")."""
    out = msgspec.to_builtins(a)
    for field in DECIMALS:
        value = getattr(a, field, None)
        if value is not None:
            out[field] = plain(value)
    return out


def decode_agreement(data: dict) -> Agreement:
    return msgspec.convert(data, Agreement)
