"""How many decimal places an exact amount has, for the bounds money fields put on them (budgets count
in nano-units; contract accruals stay exact in a 60-digit context)."""

from __future__ import annotations

from decimal import Decimal


def places(value: Decimal) -> int:
    """Decimal places of a finite value, trailing zeros aside (1.50 has 1, 1E+15 and 0E-50 none).

    Read from the digits, not through `normalize()`: its context rounds 1E-1000000000 to 0, so an amount
    of that many places passed a places check and was then stored as 0."""
    _, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int) or not any(digits):
        return 0
    zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -(exponent + zeros))
