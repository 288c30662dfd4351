"""Per-deployment prices (per 1M tokens), a call's exact cost, and a version id for the whole table.

Config prices are floats; `Decimal(str(x))` turns 2.5 into exactly 2.5 (not 2.49999...). The
version is a hash of the table's canonical text: every usage row stores it with its cost, so a
later price change is a new version and never rewrites what past calls cost.

A call's cost is computed in integers (`DeploymentPrice.charge`): each price is held as an integer
coefficient at one common exponent, the exponent the Decimal sum in `cost` has, so the cost is
`units * 10**(exp - 6)` exactly, and its text, nano-units and Decimal are made from that integer.
They are the Decimal arithmetic's results bit for bit (tests/metering/test_prices.py checks it on
random prices and token counts): below 10**28 units the Decimal path never rounds (the default
context keeps 28 digits), and above it `charge` uses that path itself. The Decimal arithmetic cost
~2.5 µs per call; the integers a fraction of it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal

from ..accounting.record import Usage
from ..config.decimals import plain

MILLION = Decimal(1_000_000)
NANOS = Decimal(1_000_000_000)  # counters hold integer nano-units of a currency (exact in Redis)
ZERO = Decimal(0)
EXACT_BELOW = 10**28  # the default Decimal context's precision: a sum below it is never rounded


def _exponent(d: Decimal) -> int:
    exp = d.as_tuple().exponent
    if not isinstance(exp, int):
        raise ValueError(f"not a finite price: {d}")
    return exp


def _units(d: Decimal, exp: int) -> int:
    """`d`'s coefficient at exponent `exp` (<= its own): d == units * 10**exp, exactly."""
    sign, digits, own = d.as_tuple()
    assert isinstance(own, int)
    units = int("".join(map(str, digits))) * 10 ** (own - exp)
    return -units if sign else units


@dataclass(frozen=True, slots=True)
class DeploymentPrice:
    input: Decimal
    output: Decimal
    cached_input: Decimal | None
    currency: str
    # Integer micro-units per 1M tokens, rounded up: reservations use integer math on the hot path.
    in_micro: int = 0
    out_micro: int = 0
    # Exact integer pricing (`charge`): the prices' coefficients at `exp`, the smallest of their
    # exponents (that of the Decimal sum in `cost`). `exact`: all three non-negative (then every
    # partial sum is at most the total, so a total below EXACT_BELOW was never rounded).
    exp: int = 0
    in_units: int = 0
    cached_units: int = 0
    out_units: int = 0
    exact: bool = False
    nanos_mul: int = 1  # cost in nanos == units * 10**(exp + 3): a factor when exp + 3 >= 0 ...
    nanos_div: int = 1  # ... else a divisor (rounded half-even)
    # The cost's text: units / text_scale with text_digits decimals (the format spec `text_spec`),
    # trailing zeros dropped (text_scale 0: exact_text).
    text_scale: int = 0
    text_spec: str = ""
    # The prices of the service tiers the deployment declares (config `price.tiers`), by tier name: a
    # call that asked for one is charged at it (`for_tier`); auto, default and any other at this one.
    tiers: dict[str, DeploymentPrice] | None = None
    # `charge`: this price's own function, its coefficients and scales bound in (see `_charger`).
    charge: Callable[[Usage], tuple[int, int, str]] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "charge", self._charger())

    def for_tier(self, tier: str | None) -> DeploymentPrice:
        """The price of a call that asked for service tier `tier` (None: none asked)."""
        tiers = self.tiers
        if tiers is None or tier is None:
            return self
        return tiers.get(tier, self)

    @classmethod
    def of(cls, input, output, cached_input, currency: str, tiers=None) -> DeploymentPrice:
        i, o = Decimal(str(input)), Decimal(str(output))
        c = Decimal(str(cached_input)) if cached_input is not None else None
        worst_in = max(i, c) if c is not None else i
        up = lambda d: int((d * MILLION).to_integral_value(ROUND_CEILING))  # noqa: E731
        cp = c if c is not None else i
        exp = min(_exponent(i), _exponent(cp), _exponent(o))
        shift = exp + 3
        return cls(
            i,
            o,
            c,
            currency,
            up(worst_in),
            up(o),
            exp,
            _units(i, exp),
            _units(cp, exp),
            _units(o, exp),
            exact=min(i, cp, o) >= 0,
            nanos_mul=10**shift if shift >= 0 else 1,
            nanos_div=10**-shift if shift < 0 else 1,
            text_scale=10 ** (6 - exp) if exp < 6 else 0,
            text_spec=f"0{6 - exp}d",
            tiers={t: cls.of(p.input, p.output, p.cached_input, currency) for t, p in tiers.items()} if tiers else None,
        )

    def cost(self, usage: Usage) -> Decimal:
        """Exact cost: uncached prompt at `input`, cached at `cached_input` (else input), output at `output`.
        The reference arithmetic; `charge` gives the same results in integers."""
        cached = min(max(usage.cached_tokens, 0), max(usage.prompt_tokens, 0))
        uncached = max(usage.prompt_tokens, 0) - cached
        cached_price = self.cached_input if self.cached_input is not None else self.input
        total = uncached * self.input + cached * cached_price + max(usage.completion_tokens, 0) * self.output
        return total / MILLION  # exact: dividing by a power of ten only moves the exponent

    def units(self, usage: Usage) -> int:
        """The cost's coefficient: cost(usage) == units * 10**(exp - 6) (the same clamps as `cost`)."""
        prompt, cached, completion = usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens
        prompt = prompt if prompt > 0 else 0
        cached = (cached if cached > 0 else 0) if cached < prompt else prompt
        completion = completion if completion > 0 else 0
        return (prompt - cached) * self.in_units + cached * self.cached_units + completion * self.out_units

    def _charger(self) -> Callable[[Usage], tuple[int, int, str]]:
        """`charge` for this price: `charged` with the price's coefficients, scales and text format bound
        in a closure (once per call: no attribute reads, no branch on what the price already decided)."""
        general = self.charged
        if not self.exact or not self.text_scale:
            return general
        in_units, cached_units, out_units = self.in_units, self.cached_units, self.out_units
        mul, div, scale = self.nanos_mul, self.nanos_div, self.text_scale
        pattern = f"%d.%{self.text_spec}"

        def charge(usage: Usage) -> tuple[int, int, str]:
            prompt, cached, completion = usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens
            if prompt < 0:
                prompt = 0
            if cached > prompt:
                cached = prompt
            elif cached < 0:
                cached = 0
            if completion < 0:
                completion = 0
            units = (prompt - cached) * in_units + cached * cached_units + completion * out_units
            if units >= EXACT_BELOW:
                return general(usage)
            if div == 1:
                nanos = units * mul
            else:
                nanos, rest = divmod(units, div)
                rest += rest
                if rest > div or (rest == div and nanos & 1):
                    nanos += 1
            whole, frac = divmod(units, scale)
            return units, nanos, (pattern % (whole, frac)).rstrip("0") if frac else str(whole)

        return charge

    def charged(self, usage: Usage) -> tuple[int, int, str]:
        """(units, nano-units, text) of the call's cost: `units` as `units()` (for `decimal`), the nanos
        and text as `to_nanos(cost(usage))` and `text(cost(usage))`, in integers. Every price; `charge`
        is the same for this price, made faster where it can be."""
        prompt, cached, completion = usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens
        if prompt < 0:
            prompt = 0
        if cached > prompt:
            cached = prompt
        elif cached < 0:
            cached = 0
        if completion < 0:
            completion = 0
        units = (prompt - cached) * self.in_units + cached * self.cached_units + completion * self.out_units
        if not self.exact or units >= EXACT_BELOW:
            cost = self.cost(usage)  # a total the Decimal path rounds: it is the reference
            return units, to_nanos(cost), text(cost)
        div = self.nanos_div
        if div == 1:
            nanos = units * self.nanos_mul
        else:
            nanos, rest = divmod(units, div)
            rest += rest
            if rest > div or (rest == div and nanos & 1):
                nanos += 1
        scale = self.text_scale
        if not scale:
            return units, nanos, exact_text(units, self.exp - 6)
        whole, frac = divmod(units, scale)
        return units, nanos, f"{whole}.{frac:{self.text_spec}}".rstrip("0") if frac else str(whole)

    def amount(self, usage: Usage, units: int) -> float:
        """`float(cost(usage))` from `charge`'s units: the double nearest the exact cost (int / int and
        float(int) round correctly in Python, as float(Decimal) does), for metrics' cost series."""
        if not (self.exact and units < EXACT_BELOW):
            return float(self.cost(usage))
        shift = self.exp - 6
        return units / 10**-shift if shift < 0 else float(units * 10**shift)

    def decimal(self, usage: Usage, units: int) -> Decimal:
        """`cost(usage)` as a Decimal with the same coefficient and exponent, from `charge`'s units."""
        if not (self.exact and units < EXACT_BELOW):
            return self.cost(usage)
        # The division in `cost` is exact: it keeps the sum's exponent where it can, taking up to six
        # trailing zeros off the coefficient (as many as the division by 10**6 needs), else lowers it.
        digits = str(units)
        zeros = 6 if not units else min(6, len(digits) - len(digits.rstrip("0")))
        return Decimal(f"{units // 10**zeros}E{self.exp - 6 + zeros}")

    def as_json(self) -> dict:
        out: dict = {
            "input": str(self.input),
            "output": str(self.output),
            "cached_input": None if self.cached_input is None else str(self.cached_input),
            "currency": self.currency,
        }
        if self.tiers:  # only when declared: a table without tiers keeps the version it had
            out["tiers"] = {t: p.as_json() for t, p in sorted(self.tiers.items())}
        return out


def text(amount: Decimal) -> str:
    """Canonical exact text: no exponent, no trailing zeros (2.50 -> "2.5", 1.5E-7 -> "0.00000015")."""
    return plain(amount)


def exact_text(units: int, exp: int) -> str:
    """`text(Decimal(units) * 10**exp)` for units >= 0, in integers and strings."""
    if not units:
        return "0"
    full = str(units)
    digits = full.rstrip("0")
    exp += len(full) - len(digits)
    if exp >= 0:
        return digits + "0" * exp
    n = len(digits)
    if n > -exp:
        return digits[:exp] + "." + digits[exp:]
    return "0." + "0" * (-exp - n) + digits


def to_nanos(amount: Decimal) -> int:
    """Integer nano-units (half-even) for counters and SQL sums; the exact text is kept too."""
    return int((amount * NANOS).to_integral_value(ROUND_HALF_EVEN))


def reserve_nanos(tokens_in: int, in_micro: int, tokens_out: int, out_micro: int) -> int:
    """Worst-case cost in nano-units, rounded up: tokens * micro / 1e6 per 1M * 1e9 = tokens * micro / 1e3."""
    return -(-(tokens_in * in_micro + tokens_out * out_micro) // 1000)


class PriceTable:
    def __init__(self, prices: dict[str, DeploymentPrice]) -> None:
        self.prices = prices
        canonical = json.dumps(
            {k: v.as_json() for k, v in sorted(prices.items())}, sort_keys=True, separators=(",", ":")
        )
        self.canonical = canonical
        self.version = "pv_" + hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @classmethod
    def from_config(cls, config) -> PriceTable:
        """From `config.deployments[*].price` (a deployment without a price costs nothing)."""
        return cls(
            {
                name: DeploymentPrice.of(
                    d.price.input, d.price.output, d.price.cached_input, d.price.currency, d.price.tiers
                )
                for name, d in config.deployments.items()
                if d.price is not None
            }
        )

    def get(self, deployment: str | None) -> DeploymentPrice | None:
        return self.prices.get(deployment) if deployment is not None else None

    def cost(self, deployment: str | None, usage: Usage | None) -> tuple[Decimal, str]:
        price = self.get(deployment)
        if price is None or usage is None:
            return ZERO, price.currency if price is not None else "USD"
        return price.cost(usage), price.currency
