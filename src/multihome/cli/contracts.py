"""`multihome contracts list|report|project`: contract terms from a shell.

Reads the ledger directly from the database named by the config's `storage` section (or `--db`),
so it works with the gateway stopped; agreements are the config's `contracts:` section plus those
created through the admin API.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys

from ..schema import admin_fields
from .output import money, percent, print_json, table
from .serve import CONFIG_ENV

UTC = dt.UTC


def _load(args) -> tuple[object, str]:
    import msgspec

    from ..config import ConfigError, Storage, env_secret
    from ..config.contracts import ContractsConfigError, parse_contracts
    from ..config.yaml_source import read_yaml

    if not args.config:
        raise SystemExit("contracts: give --config FILE (or set MULTIHOME_CONFIG)")
    try:
        with open(args.config) as f:
            # The gateway's own reader: a date the calendar has not is a config error, not a traceback.
            data = read_yaml(f.read(), args.config) or {}
    except OSError as exc:
        raise SystemExit(f"{args.config}: cannot read config ({exc})") from None
    except ConfigError as exc:
        raise SystemExit(f"{args.config}: cannot read config ({exc})") from None
    if not isinstance(data, dict):
        raise SystemExit(f"{args.config}: the config must be a mapping")
    try:
        cfg = parse_contracts(data.get("contracts"))
        storage = msgspec.convert(data.get("storage") or {}, Storage)
        url = args.db or env_secret(storage.url_env, what="storage.url_env") or storage.url
    except (ContractsConfigError, ConfigError, msgspec.ValidationError) as exc:
        raise SystemExit(f"config error: {exc}") from None
    if not url:
        raise SystemExit("contracts: no database (set storage.url in the config, or --db URL)")
    return cfg, url


def _now(args) -> dt.datetime:
    if not getattr(args, "at", None):
        return dt.datetime.now(UTC)
    try:
        at = dt.datetime.fromisoformat(args.at)
    except ValueError:
        raise SystemExit(f"--at {args.at[:64]!r}: not an ISO 8601 time (e.g. 2026-03-01T00:00:00Z)") from None
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    found = admin_fields.moment(at, "--at")  # year 1 at +05:00 overflowed the report's arithmetic
    if found is not None:
        raise SystemExit(found.message)
    return at


def _until(value: str) -> dt.datetime:
    """--until's day, inclusive: the instant after it."""
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise SystemExit(f"--until {value[:64]!r}: not a date (YYYY-MM-DD)") from None
    found = admin_fields.day(day, "--until")  # 9999-12-31 overflowed its next day
    if found is not None:
        raise SystemExit(found.message)
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), UTC)


async def _open(args):
    from ..contracts.service import ContractsService
    from ..storage.engine import create_engine

    cfg, url = _load(args)
    engine = create_engine(url)
    svc = ContractsService(cfg, engine=engine)
    from ..contracts.ledger import Ledger

    svc.ledger = Ledger(engine)
    try:
        await svc.refresh()
    except Exception:
        await engine.dispose()
        raise
    return svc, engine


async def _close(svc, engine) -> None:
    if svc.ledger is not None:
        await svc.ledger.close()  # its reader thread (a SQLite file)
    await engine.dispose()


def _pick(svc, contract_id: str | None):
    items = svc.agreements()
    if contract_id is None:
        return items
    a = svc.agreement(contract_id)
    if a is None:
        known = ", ".join(sorted(x.id for x in items)) or "none"
        raise SystemExit(f"unknown contract {contract_id!r} (known: {known})")
    return [a]


def _list(args) -> int:
    async def run():
        svc, engine = await _open(args)
        try:
            return [(a, svc.totals.get(a.id)) for a in svc.agreements()]
        finally:
            await _close(svc, engine)

    from ..config.contracts import encode_agreement
    from ..config.decimals import plain

    rows = asyncio.run(run())
    if args.json:
        print_json(
            [
                {**encode_agreement(a), "accrued": plain(t.accrued) if t else "0", "calls": t.calls if t else 0}
                for a, t in rows
            ]
        )
        return 0
    print(
        table(
            ["id", "kind", "terms", "from", "to", "accrued", "calls"],
            [
                (
                    a.id,
                    _kind(a),
                    _terms(a),
                    a.starts_on,
                    a.ends_on,
                    money(t.accrued if t else 0, a.currency),
                    t.calls if t else 0,
                )
                for a, t in rows
            ],
        ),
        end="",
    )
    return 0


def _kind(a) -> str:
    return str(a.__struct_config__.tag).replace("_", " ")  # "revenue_share" -> "revenue share"


def _terms(a) -> str:
    """What the agreement promises, in words: a revenue share's rate and cap, a commitment's amount."""
    if a.__struct_config__.tag == "revenue_share":
        cap = f", capped at {money(a.cap, a.currency)}" if a.cap is not None else ", no cap"
        parties = f" to {', '.join(a.parties)}" if a.parties else ""
        return f"{percent(a.rate, 1)} of metered cost{parties}{cap}"
    return f"{money(a.amount, a.currency)} committed with {a.provider}"


def _report(args) -> int:
    from ..contracts.report import build_reports, to_csv

    async def run():
        svc, engine = await _open(args)
        try:
            return await build_reports(_pick(svc, args.contract), svc.ledger, _now(args), svc.cfg.rate_window_days)
        finally:
            await _close(svc, engine)

    reports = asyncio.run(run())
    if args.csv:
        out = to_csv(reports)
    elif args.json:
        out = json.dumps([r.to_dict() for r in reports], indent=2) + "\n"
    else:
        out = "".join(_human(r) for r in reports)
    if args.out:
        with open(args.out, "w", newline="") as f:
            f.write(out)
    else:
        sys.stdout.write(out)
    return 0


def _human(r) -> str:
    lines = [
        f"{r.contract_id} ({r.kind}, {r.starts_on}..{r.ends_on}, {r.currency}) as of {r.as_of}: {r.status}",
        f"  accrued      {r.accrued} over {r.calls} calls",
    ]
    if r.kind == "revenue_share":
        lines.append(f"  cap          {r.limit or 'none'}   remaining {r.remaining or '-'}   forgone {r.forgone}")
    else:
        lines.append(
            f"  commitment   {r.limit}   planned to date {r.planned_to_date}   "
            f"burn vs plan {r.burn_vs_plan:+.2%} ({r.status})   remaining {r.remaining}"
        )
        lines.append(f"  at the end   {r.projected_at_end} at the recent rate")
    when = r.projected_date or ("reached" if r.status == "capped" else "not before the end")
    lines.append(
        f"  recent rate  {r.daily_rate}/day over {r.window_days:g} days   projected to reach the limit: {when}"
    )
    return "\n".join(lines) + "\n"


def _project(args) -> int:
    from ..contracts import scenario
    from ..contracts.report import build_report

    async def run():
        svc, engine = await _open(args)
        try:
            a = _pick(svc, args.contract)[0]
            now = _now(args)
            rep = await build_report(a, svc.ledger, now, svc.cfg.rate_window_days)
            daily = await svc.ledger.daily(a.id, until=now)  # the ledger as of --at, as the report is
            return a, rep, daily, now
        finally:
            await _close(svc, engine)

    until = _until(args.until) if args.until else None  # a bad --until before the database is opened
    a, rep, daily, now = asyncio.run(run())
    base = args.base if args.base is not None else float(rep.daily_rate_exact)
    try:
        p = scenario.project(
            a,
            accrued_now=float(rep.accrued_exact),
            base_daily=base,
            growth=args.growth,
            growth_rate=args.rate,
            now=now,
            until=until,
            history=scenario.cumulative_history(daily),
        )
    except ValueError as exc:
        raise SystemExit(f"contracts project: {exc}") from None
    except OverflowError:
        raise SystemExit(_TOO_FAR) from None
    for path in args.out:
        if not path.lower().endswith((".png", ".svg")):
            raise SystemExit(f"--out {path}: use a .png or .svg file name")
    if args.out:
        from ..contracts.chart import render

        try:
            render(p, args.out)
        except OverflowError:  # the chart's margin past the calendar's last day
            raise SystemExit(_TOO_FAR) from None
    if args.json:
        print(json.dumps({**p.to_dict(), "charts": args.out}, indent=2))
    else:
        print(
            f"{a.id}: {p.headline}\n  {p.label} ({p.growth}, {p.growth_rate:+.1%} per 30 days from "
            f"{scenario.money_text(p.base_daily, p.currency)}/day)"
        )
        for path in args.out:
            print(f"wrote {path}")
    return 0


_TOO_FAR = (
    "contracts project: the projection does not fit in numbers or dates (compound growth over centuries, or a "
    "chart past the year 9999): give a nearer --until or a lower --rate"
)


def _common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--config", "-c", default=os.environ.get(CONFIG_ENV), help="gateway config (YAML; default: $MULTIHOME_CONFIG)"
    )
    p.add_argument("--db", help="database URL (default: the config's storage.url)")
    p.add_argument("--at", help="compute as of this ISO time (default: now)")
    return p


def add_commands(sub) -> None:
    c = sub.add_parser("contracts", help="revenue share, committed spend: reports and projections")
    cs = c.add_subparsers(dest="contracts_command", required=True)
    ls = _common(cs.add_parser("list", help="agreements and what has accrued"))
    ls.add_argument("--json", action="store_true", help="print the agreements as JSON (for scripts)")
    ls.set_defaults(func=_list)
    r = _common(cs.add_parser("report", help="accrued, remaining to cap, projected cap date, burn vs plan"))
    r.add_argument("--contract", help="one contract id (default: all)")
    r.add_argument("--csv", action="store_true", help="CSV (one row per contract)")
    r.add_argument("--json", action="store_true")
    r.add_argument("--out", help="write to this file instead of stdout")
    r.set_defaults(func=_report)
    p = _common(cs.add_parser("project", help="scenario planner: project to the end and chart it"))
    p.add_argument("--contract", required=True)
    p.add_argument("--growth", choices=("flat", "linear", "compound"), default="flat")
    p.add_argument("--rate", type=float, default=0.0, help="growth per 30 days as a fraction (0.1 = +10%%)")
    p.add_argument("--base", type=float, help="base accrual per day (default: the recent rate from the ledger)")
    p.add_argument("--until", help="project to this date, YYYY-MM-DD inclusive (default: the contract's end)")
    p.add_argument("--out", action="append", default=[], help="chart file, .png or .svg (repeatable)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_project)
