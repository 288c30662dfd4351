"""The strategy table and the config's list of strategy names are one list."""

from __future__ import annotations

import typing

from multihome.config import STRATEGIES as CONFIG_STRATEGIES
from multihome.config import ModelGroup
from multihome.routing.strategies import STRATEGIES


def test_every_strategy_the_config_accepts_has_an_entry_in_the_table_and_back():
    accepted = typing.get_args(typing.get_type_hints(ModelGroup)["strategy"])
    assert set(accepted) == set(STRATEGIES) == set(CONFIG_STRATEGIES)
    assert STRATEGIES["primary-first"] is None  # the config order is the plan
