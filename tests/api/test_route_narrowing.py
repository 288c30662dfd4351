"""A client's narrowing of a call's deployments (docs/routing.md): from the `x-multihome-deployments` header or
the body's `multihome.route.deployments`, the header winning when both are sent; a name outside the group is a
400 whose `param` names where the client wrote it (the body's was reported as the header)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from multihome.api.pipeline import narrowing
from multihome.schema.errors import ApiError

GROUP: Any = SimpleNamespace(name="gpt", deployments=[SimpleNamespace(name="a"), SimpleNamespace(name="b")])


def _narrowed(header: str | None = None, body: list[str] | None = None) -> frozenset[str] | None:
    scope = {"headers": [] if header is None else [(b"x-multihome-deployments", header.encode())]}
    raw = {} if body is None else {"multihome": msgspec.Raw(msgspec.json.encode({"route": {"deployments": body}}))}
    return narrowing(scope, raw, GROUP)


def test_the_header_or_the_body_narrows_and_the_header_wins():
    assert _narrowed() is None
    assert _narrowed(header="b") == {"b"}
    assert _narrowed(body=["a"]) == {"a"}
    assert _narrowed(header="b", body=["a"]) == {"b"}


@pytest.mark.parametrize(
    ("header", "body", "param"),
    [
        ("zz", None, "x-multihome-deployments"),
        (None, ["zz"], "multihome.route.deployments"),
        (None, [], "multihome.route.deployments"),
        ("zz", ["a"], "x-multihome-deployments"),
    ],
)
def test_a_name_outside_the_group_is_a_400_naming_where_it_was_written(header, body, param):
    with pytest.raises(ApiError) as info:
        _narrowed(header, body)
    assert info.value.status == 400 and info.value.body.code == "invalid_route_narrowing"
    assert info.value.body.param == param
