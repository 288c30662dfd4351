"""Regenerate the example charts of docs/contracts.md (docs/charts/*.png).

Two scenarios, each a small ledger in a throw-away SQLite database, charted with the real
`multihome contracts project` command:

- commitment-shortfall.png: a 120,000 USD commitment burning behind plan; the projection ends
  short of it, and the chart says by how much (the amount paid for nothing).
- revenue-share-cap.png: a 15 % revenue share growing 10 % a month that reaches its
  250,000 USD cap before the year ends.

Run from the repository root: `.venv/bin/python scripts/contract_charts.py [OUT_DIR]`
(default docs/charts). Same inputs, same pictures: the ledger and `--at` are fixed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

UTC = dt.UTC
CONFIG = """
storage: {{url: "{url}"}}
contracts:
  commitments:
    - {{id: azure-commit-2026, provider: azure-eastus, amount: "120000.00", starts_on: 2026-01-01, ends_on: 2026-12-31}}
  revenue_share:
    - {{id: rs-fabrikam-2026, parties: [Contoso, Fabrikam], rate: "0.15", cap: "250000.00",
       starts_on: 2026-01-01, ends_on: 2026-12-31}}
"""
AT = "2026-07-15T15:00:00+00:00"  # "today" in both charts: mid-afternoon, so today's accruals are partial


def _daily_cost(contract: str, day: int) -> Decimal:
    """Metered cost on day `day` of the year: weekday/weekend rhythm, and growth for the revenue share."""
    weekend = (dt.date(2026, 1, 1) + dt.timedelta(days=day)).weekday() >= 5
    if contract == "azure-commit-2026":
        base = 210.0 + 40.0 * (day % 7 == 3)  # about 215 USD a day: half the 329 a day the plan needs
    else:
        base = 4200.0 * 1.1 ** (day / 30)  # 15 % of it accrues: ~630 USD a day in January, growing 10 % a month
    return Decimal(f"{base * (0.55 if weekend else 1.0):.2f}")


async def _fill(url: str) -> None:
    import yaml

    from multihome.config.contracts import parse_contracts
    from multihome.contracts import terms
    from multihome.contracts.ledger import Ledger, Pending
    from multihome.storage.engine import create_engine

    cfg = parse_contracts(yaml.safe_load(CONFIG.format(url=url))["contracts"])
    now = dt.datetime.fromisoformat(AT)
    engine = create_engine(url)
    try:
        ledger = Ledger(engine)
        for a in [*cfg.commitments, *cfg.revenue_share]:
            batch = []
            for day in range((now.date() - a.starts_on).days + 1):
                # Calls at 10:00 and 14:00 UTC; today's 14:00 call is before "now" (15:00) as well.
                for hour, share in ((10, Decimal("0.4")), (14, Decimal("0.6"))):
                    at = dt.datetime.combine(a.starts_on + dt.timedelta(days=day), dt.time(hour), UTC)
                    cost = _daily_cost(a.id, day) * share
                    batch.append(
                        Pending(
                            a.id, f"req_{day}_{hour}", at, cost, terms.requested(a, cost), terms.limit(a), "2026-01"
                        )
                    )
            await ledger.apply(batch)
    finally:
        await engine.dispose()


def main(argv: list[str]) -> int:
    from multihome.cli import main as multihome
    from multihome.storage import migrate_sync

    out = Path(argv[0] if argv else "docs/charts")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'ledger.db'}"
        migrate_sync(url)
        asyncio.run(_fill(url))
        config = Path(tmp) / "gateway.yaml"
        config.write_text(CONFIG.format(url=url))
        common = ["contracts", "project", "--config", str(config), "--at", AT]
        multihome(
            [
                *common,
                "--contract",
                "azure-commit-2026",
                "--growth",
                "flat",
                "--out",
                str(out / "commitment-shortfall.png"),
            ]
        )
        multihome(
            [
                *common,
                "--contract",
                "rs-fabrikam-2026",
                "--growth",
                "compound",
                "--rate",
                "0.1",
                "--out",
                str(out / "revenue-share-cap.png"),
            ]
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
