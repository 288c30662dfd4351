"""Per-deployment prices (per 1M tokens) as Decimals, and a version id for the whole table.

Config prices are floats; `Decimal(str(x))` turns 2.5 into exactly 2.5 (not 2.49999...). The
version is a hash of the table's canonical text: every usage row stores it with its cost, so a
later price change is a new version and never rewrites what past calls cost.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal

from ..accounting.record import Usage

MILLION = Decimal(1_000_000)
NANOS = Decimal(1_000_000_000)  # counters hold integer nano-units of a currency (exact in Redis)
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class DeploymentPrice:
    input: Decimal
    output: Decimal
    cached_input: Decimal | None
    currency: str
    # Integer micro-units per 1M tokens, rounded up: reservations use integer math on the hot path.
    in_micro: int = 0
    out_micro: int = 0

    @classmethod
    def of(cls, input, output, cached_input, currency: str) -> DeploymentPrice:
        i, o = Decimal(str(input)), Decimal(str(output))
        c = Decimal(str(cached_input)) if cached_input is not None else None
        worst_in = max(i, c) if c is not None else i
        up = lambda d: int((d * MILLION).to_integral_value(ROUND_CEILING))  # noqa: E731
        return cls(i, o, c, currency, up(worst_in), up(o))

    def cost(self, usage: Usage) -> Decimal:
        """Exact cost: uncached prompt at `input`, cached at `cached_input` (else input), output at `output`."""
        cached = min(max(usage.cached_tokens, 0), max(usage.prompt_tokens, 0))
        uncached = max(usage.prompt_tokens, 0) - cached
        cached_price = self.cached_input if self.cached_input is not None else self.input
        total = uncached * self.input + cached * cached_price + max(usage.completion_tokens, 0) * self.output
        return total / MILLION  # exact: dividing by a power of ten only moves the exponent

    def as_json(self) -> dict:
        return {
            "input": str(self.input),
            "output": str(self.output),
            "cached_input": None if self.cached_input is None else str(self.cached_input),
            "currency": self.currency,
        }


def text(amount: Decimal) -> str:
    """Canonical exact text: no exponent, no trailing zeros (2.50 -> "2.5", 1.5E-7 -> "0.00000015")."""
    return format(amount.normalize(), "f") if amount else "0"


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
                name: DeploymentPrice.of(d.price.input, d.price.output, d.price.cached_input, d.price.currency)
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
