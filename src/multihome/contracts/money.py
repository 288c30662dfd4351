"""Money arithmetic: Decimal only, one context, one rounding rule.

Rule: accruals are computed and stored at full precision (cost x rate, no rounding; the context
has 60 significant digits so no realistic product or sum is rounded). Reports round the exact
total once, half-even, to cents. So a reported number is never a sum of rounded parts.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext

CTX = Context(prec=60, rounding=ROUND_HALF_EVEN)
CENT = Decimal("0.01")
ZERO = Decimal(0)


def mul(a: Decimal, b: Decimal) -> Decimal:
    return CTX.multiply(a, b)


def add(a: Decimal, b: Decimal) -> Decimal:
    return CTX.add(a, b)


def sub(a: Decimal, b: Decimal) -> Decimal:
    return CTX.subtract(a, b)


def total(values) -> Decimal:
    with localcontext(CTX):
        return sum(values, ZERO)


def cents(value: Decimal) -> Decimal:
    """Round half-even to cents (banker's rounding: 0.125 -> 0.12, 0.135 -> 0.14)."""
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN, context=CTX)


def dec(value: str | int | Decimal) -> Decimal:
    """Parse a stored amount (text column) back to a Decimal, exactly."""
    return value if isinstance(value, Decimal) else Decimal(value)


def text(value: Decimal) -> str:
    """Exact text form for storage (no exponent surprises for tiny values: 'E' forms parse back exactly)."""
    return str(value)
