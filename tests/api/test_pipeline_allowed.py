"""The deployments admission counts against: those policy allows, in the group's order."""

from __future__ import annotations

from types import SimpleNamespace

from multihome.api.pipeline import _allowed


def _group(*names: str) -> SimpleNamespace:
    deployments = [SimpleNamespace(name=n) for n in names]
    return SimpleNamespace(deployments=deployments, position={n: i for i, n in enumerate(names)})


def _shape(allowed: frozenset[str] | None) -> SimpleNamespace:
    policy = None if allowed is None else SimpleNamespace(decision=SimpleNamespace(deployments=allowed))
    return SimpleNamespace(policy=policy)


def test_policy_allowing_every_deployment_gives_the_groups_own_list():
    group = _group("a", "b", "c")
    assert _allowed(group, _shape(None)) is group.deployments  # no policy view: no copy per call
    assert _allowed(group, _shape(frozenset({"a", "b", "c"}))) is group.deployments
    assert _allowed(group, _shape(frozenset({"c", "a", "b", "elsewhere"}))) is group.deployments


def test_policy_leaving_some_out_gives_the_rest_in_the_groups_order():
    group = _group("a", "b", "c")
    assert [d.name for d in _allowed(group, _shape(frozenset({"c", "a"})))] == ["a", "c"]
    assert [d.name for d in _allowed(group, _shape(frozenset({"b", "elsewhere"})))] == ["b"]
    assert _allowed(group, _shape(frozenset())) == []
    assert [d.name for d in group.deployments] == ["a", "b", "c"]  # the group's own list is left as it was
