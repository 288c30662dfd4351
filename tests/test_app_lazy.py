"""app._Lazy: the stand-in for an object a service makes at start-up reads through to whatever the
owner holds at the moment of each read."""

from __future__ import annotations

import pytest

from multihome.app import _Lazy


class _Box:
    def __init__(self, **fields) -> None:
        self.__dict__.update(fields)


def test_reads_follow_the_owners_current_object():
    owner = _Box(store=None)
    lazy = _Lazy(owner, "store")
    owner.store = _Box(snapshot=1, name="first")
    assert (lazy.snapshot, lazy.name) == (1, "first")
    owner.store = _Box(snapshot=2, name="second")  # replaced (a restart, a reload): the next read sees it
    assert (lazy.snapshot, lazy.name) == (2, "second")


def test_a_missing_attribute_is_the_objects_attribute_error():
    lazy = _Lazy(_Box(store=_Box()), "store")
    with pytest.raises(AttributeError):
        _ = lazy.absent
    assert getattr(lazy, "absent", "default") == "default"
    assert lazy.__class__ is _Box  # every read goes to the object, its class included
