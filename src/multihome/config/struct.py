"""The base of every config struct and the numbers a config may hold.

Every section refuses unknown keys (a typo is an error, not a silent default), and impossible
values (a negative price, a zero window) are refused at load with the key path, so no later
arithmetic (costs, budgets, reservations) ever sees them.
"""

from __future__ import annotations

from typing import Annotated

import msgspec


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
Count = Annotated[int, msgspec.Meta(ge=0)]
PositiveCount = Annotated[int, msgspec.Meta(ge=1)]
# Prices are per million tokens; no model costs a million units of currency per million tokens.
PricePerMillion = Annotated[float, msgspec.Meta(ge=0, le=1_000_000)]
Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]
