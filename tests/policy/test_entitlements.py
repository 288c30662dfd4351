"""Time-bound entitlements: terms with inclusive boundaries, revocation, family globs, exclusivity."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from multihome.policy import (
    ENTITLEMENT_EXPIRED,
    ENTITLEMENT_NOT_STARTED,
    ENTITLEMENT_REQUIRED,
    ENTITLEMENT_REVOKED,
    EXCLUSIVE_TO_OTHER_TENANT,
    Entitlement,
    PolicyEngine,
    check_grant,
)

from .fixtures import ALL, NAMES, principal

D = dt.date
LICENSED = {"gpt-4o", "gpt-4o-mini", "claude"}


def ent(id="ent_x", tenant="acme", group="gpt-4o", start=D(2026, 1, 1), end=D(2026, 10, 31), **kw) -> Entitlement:
    return Entitlement(id, tenant, group, start, end, **kw)


# (case, entitlements, tenant, group, today, code or None, substring of the message)
CASES = [
    (
        "no entitlement",
        [],
        "acme",
        "gpt-4o",
        D(2026, 6, 1),
        ENTITLEMENT_REQUIRED,
        "no entitlement for model group gpt-4o",
    ),
    (
        "day before the term",
        [ent()],
        "acme",
        "gpt-4o",
        D(2025, 12, 31),
        ENTITLEMENT_NOT_STARTED,
        "ent_x for gpt-4o starts 2026-01-01",
    ),
    ("first day is inside", [ent()], "acme", "gpt-4o", D(2026, 1, 1), None, ""),
    ("within the term", [ent()], "acme", "gpt-4o", D(2026, 6, 1), None, ""),
    ("last day is inside", [ent()], "acme", "gpt-4o", D(2026, 10, 31), None, ""),
    (
        "day after the term",
        [ent()],
        "acme",
        "gpt-4o",
        D(2026, 11, 1),
        ENTITLEMENT_EXPIRED,
        "ent_x for gpt-4o ended 2026-10-31",
    ),
    (
        "revoked within the term",
        [ent(revoked=True)],
        "acme",
        "gpt-4o",
        D(2026, 6, 1),
        ENTITLEMENT_REVOKED,
        "ent_x for gpt-4o was revoked",
    ),
    (
        "renewal takes over from an expired grant",
        [ent(), ent("ent_y", start=D(2026, 11, 1), end=D(2027, 10, 31))],
        "acme",
        "gpt-4o",
        D(2026, 11, 1),
        None,
        "",
    ),
    (
        "upcoming grant is named before an expired one",
        [ent(), ent("ent_y", start=D(2027, 1, 1), end=D(2027, 12, 31))],
        "acme",
        "gpt-4o",
        D(2026, 12, 1),
        ENTITLEMENT_NOT_STARTED,
        "ent_y for gpt-4o starts 2027-01-01",
    ),
    ("family glob covers a member", [ent(group="gpt-4o*")], "acme", "gpt-4o-mini", D(2026, 6, 1), None, ""),
    ("family glob covers its own stem", [ent(group="gpt-4o*")], "acme", "gpt-4o", D(2026, 6, 1), None, ""),
    (
        "family glob does not cover another family",
        [ent(group="gpt-4o*")],
        "acme",
        "claude",
        D(2026, 6, 1),
        ENTITLEMENT_REQUIRED,
        "no entitlement for model group claude",
    ),
    (
        "exact name does not cover a longer name",
        [ent(group="gpt-4o")],
        "acme",
        "gpt-4o-mini",
        D(2026, 6, 1),
        ENTITLEMENT_REQUIRED,
        "no entitlement for model group gpt-4o-mini",
    ),
    ("unlicensed group needs none", [], "acme", "llama", D(2026, 6, 1), None, ""),
    (
        "another tenant's grant does not license",
        [ent(tenant="globex")],
        "acme",
        "gpt-4o",
        D(2026, 6, 1),
        ENTITLEMENT_REQUIRED,
        "no entitlement",
    ),
    (
        "exclusive to another tenant, though this tenant holds a grant",
        [ent("ent_a", tenant="globex", exclusive=True), ent("ent_b")],
        "acme",
        "gpt-4o",
        D(2026, 6, 1),
        EXCLUSIVE_TO_OTHER_TENANT,
        "licensed exclusively to another tenant through 2026-10-31",
    ),
    (
        "exclusive family blocks a member, licensed or not",
        [ent("ent_a", tenant="globex", group="gpt-4o*", exclusive=True)],
        "acme",
        "gpt-4o-audio",
        D(2026, 6, 1),
        EXCLUSIVE_TO_OTHER_TENANT,
        "exclusively",
    ),
    (
        "exclusive grant does not block its holder",
        [ent("ent_a", exclusive=True)],
        "acme",
        "gpt-4o",
        D(2026, 6, 1),
        None,
        "",
    ),
    (
        "exclusivity ends with its term",
        [ent("ent_a", tenant="globex", exclusive=True), ent("ent_b", end=D(2027, 1, 31))],
        "acme",
        "gpt-4o",
        D(2026, 11, 1),
        None,
        "",
    ),
    (
        "revoked exclusivity blocks no one",
        [ent("ent_a", tenant="globex", exclusive=True, revoked=True), ent("ent_b")],
        "acme",
        "gpt-4o",
        D(2026, 6, 1),
        None,
        "",
    ),
]


@pytest.mark.parametrize("case,ents,tenant,group,today,code,fragment", CASES, ids=[c[0] for c in CASES])
def test_entitlements(case, ents, tenant, group, today, code, fragment):
    engine = PolicyEngine.from_rows([], ents, LICENSED)
    decision = engine.decide(principal(tenant), group, "chat", ALL, today)
    assert decision.code == code
    assert decision.allowed == (code is None)
    assert decision.deployments == (NAMES if code is None else frozenset())
    assert fragment in decision.message
    if code is not None:
        assert "Ask an organisation admin" in decision.message


def test_exclusive_refusal_does_not_name_the_other_tenant_or_its_grant():
    engine = PolicyEngine.from_rows([], [ent("ent_globex_secret", tenant="globex", exclusive=True)], LICENSED)
    decision = engine.decide(principal("acme"), "gpt-4o", "chat", ALL, D(2026, 6, 1))
    assert decision.code == EXCLUSIVE_TO_OTHER_TENANT
    text = msgspec.json.encode(decision.to_dict()).decode()
    assert "globex" not in text
    # ...and the holder is served
    assert engine.decide(principal("globex"), "gpt-4o", "chat", ALL, D(2026, 6, 1)).allowed


def test_licensed_call_names_the_grant_it_used():
    engine = PolicyEngine.from_rows(
        [], [ent("ent_short", end=D(2026, 6, 30)), ent("ent_long", end=D(2026, 12, 31))], LICENSED
    )
    assert engine.decide(principal(), "gpt-4o", "chat", ALL, D(2026, 6, 1)).entitlement_id == "ent_long"


def test_today_defaults_to_the_utc_date():
    utc_today = dt.datetime.now(dt.UTC).date()
    engine = PolicyEngine.from_rows([], [ent(start=utc_today, end=utc_today)], LICENSED)
    assert engine.decide(principal(), "gpt-4o", "chat", ALL).allowed
    engine = PolicyEngine.from_rows([], [ent(start=utc_today + dt.timedelta(days=1), end=D(2100, 1, 1))], LICENSED)
    assert engine.decide(principal(), "gpt-4o", "chat", ALL).code == ENTITLEMENT_NOT_STARTED


# (case, new, existing, id of the conflicting grant or None)
GRANTS = [
    ("exclusive over another tenant's overlapping grant", ent("n", exclusive=True), [ent("o", tenant="globex")], "o"),
    ("plain grant over another tenant's exclusive", ent("n"), [ent("o", tenant="globex", exclusive=True)], "o"),
    ("both plain", ent("n"), [ent("o", tenant="globex")], None),
    ("same tenant", ent("n", exclusive=True), [ent("o", exclusive=True)], None),
    (
        "terms touch on a boundary day (inclusive)",
        ent("n", start=D(2026, 10, 31), end=D(2027, 1, 1)),
        [ent("o", tenant="globex", exclusive=True)],
        "o",
    ),
    (
        "terms are disjoint",
        ent("n", start=D(2026, 11, 1), end=D(2027, 1, 1)),
        [ent("o", tenant="globex", exclusive=True)],
        None,
    ),
    (
        "family glob overlaps a member",
        ent("n", group="gpt-4o*"),
        [ent("o", tenant="globex", group="gpt-4o-mini", exclusive=True)],
        "o",
    ),
    (
        "two family globs nest",
        ent("n", group="gpt-4*", exclusive=True),
        [ent("o", tenant="globex", group="gpt-4o*")],
        "o",
    ),
    (
        "different families",
        ent("n", group="claude*", exclusive=True),
        [ent("o", tenant="globex", group="gpt-4o*")],
        None,
    ),
    ("existing grant revoked", ent("n", exclusive=True), [ent("o", tenant="globex", revoked=True)], None),
    ("new grant revoked", ent("n", exclusive=True, revoked=True), [ent("o", tenant="globex")], None),
    ("updating the same grant", ent("o", tenant="globex", exclusive=True), [ent("o", tenant="acme")], None),
]


@pytest.mark.parametrize("case,new,existing,conflict", GRANTS, ids=[g[0] for g in GRANTS])
def test_check_grant(case, new, existing, conflict):
    result = check_grant(new, existing)
    assert (result.existing_id if result else None) == conflict
    if result:
        assert result.new_id == new.id and result.existing_tenant_id == "globex"
        assert result.overlap_from <= result.overlap_to
        assert "exclusive" in result.message


def test_check_grant_reports_the_overlap():
    result = check_grant(
        ent("n", start=D(2026, 9, 1), end=D(2027, 3, 1), exclusive=True),
        [ent("o", tenant="globex", start=D(2026, 1, 1), end=D(2026, 10, 31))],
    )
    assert (result.overlap_from, result.overlap_to) == (D(2026, 9, 1), D(2026, 10, 31))
