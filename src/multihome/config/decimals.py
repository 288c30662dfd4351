"""A client's decimal (a budget's amount, a contract's rate, cap or amount): how it may be spelled, read
exactly, and how many decimal places it has, for the bounds money fields put on them (budgets count in
nano-units; contract accruals stay exact in a 60-digit context)."""

from __future__ import annotations

import re
from decimal import Decimal

from ..schema.errors import echo


def places(value: Decimal) -> int:
    """Decimal places of a finite value, trailing zeros aside (1.50 has 1, 1E+15 and 0E-50 none).

    Read from the digits, not through `normalize()`: its context rounds 1E-1000000000 to 0, so an amount
    of that many places passed a places check and was then stored as 0."""
    _, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int) or not any(digits):
        return 0
    zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -(exponent + zeros))


# A decimal as JSON writes a number: an optional minus, digits without a leading zero, an optional fraction and
# exponent. Python's Decimal() reads more, and reads it as something else: "0_5" is 5, " 5" and "+5" are 5,
# "٥" is 5, "Infinity" and "NaN" are no amount at all. A client's decimal (a JSON string or number) is one of these.
_SPELLED = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
SPELLING = 'a decimal number as JSON writes one, such as "25.00", "0.15" or "1e3"'


def misspelled(value: object) -> bool:
    """Whether a client's decimal (a string, int or float as decoded from JSON or YAML) is spelled otherwise
    than `_SPELLED` (a bool is no number either)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        return True
    return _SPELLED.fullmatch(value if isinstance(value, str) else str(value)) is None


def exact(value: object) -> Decimal:
    """A client's decimal as an exact Decimal; ValueError (saying how to write one) if it is `misspelled`."""
    if misspelled(value):
        raise ValueError(f"must be {SPELLING}, not '{echo(value)}'")
    return unsigned_zero(Decimal(value if isinstance(value, (str, int, Decimal)) else str(value)))


def unsigned_zero(value: Decimal) -> Decimal:
    """`value`, a zero without its sign: "-0" is the amount 0 (valid wherever 0 is, refused wherever 0 is), but
    a Decimal keeps the sign through arithmetic and text (a contract cap of "-0" was reported as "-0.00")."""
    return value.copy_abs() if not value else value


def plain(value: Decimal) -> str:
    """Exact text of a finite value without an exponent or trailing zeros, as answers and stored text write
    a decimal (2.50 -> "2.5", 1E-18 -> "0.000000000000000001", 1E+3 -> "1000", -0 -> "0")."""
    if not value:
        return "0"
    digits = format(value, "f")  # exact: no context rounds it
    return digits.rstrip("0").rstrip(".") if "." in digits else digits
