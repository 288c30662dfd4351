"""How the CLI prints for people: tables with a header row, money in its currency with fixed
decimals, percentages. `--json` bypasses all of this (commands print the API's JSON as is)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any


def money(amount: Any, currency: str, places: int = 2) -> str:
    """`USD 12.50`: the currency code, then the amount rounded to `places` decimals, thousands separated."""
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        return f"{currency} {amount}"
    value = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return f"{currency} {value:,.{places}f}"


def percent(part: Any, whole: Any) -> str:
    """`12.5%` of `whole` that `part` is (one decimal); `-` when `whole` is zero."""
    try:
        whole_d = Decimal(str(whole))
        if not whole_d:
            return "-"
        share = Decimal(str(part)) * 100 / whole_d
    except InvalidOperation:
        return "-"
    return f"{share.quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}%"


def named(ident: str | None, names: dict[str, str]) -> str:
    """An id with its name beside it, `ten_3f2 (acme)`, when the name is known."""
    if not ident:
        return "-"
    name = names.get(ident)
    return f"{ident} ({name})" if name else ident


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns padded to their widest cell, two spaces apart; the header row first, in capitals."""
    lines = [[h.upper() for h in headers]] + [["-" if c is None or c == "" else str(c) for c in row] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return (
        "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines)
        + "\n"
    )


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))
