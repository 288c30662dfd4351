"""YAML text -> plain data, refusing a key written twice (YAML would silently keep the last, so
two providers with one name would become one), and a date the calendar has not with the line it is on."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml

from .errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key '{key}' appears twice in one mapping (first on line {seen[key] + 1})",
                    key_node.start_mark,
                )
            try:
                seen[key] = key_node.start_mark.line
            except TypeError:
                pass  # an unhashable key: SafeLoader reports it itself
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        """A date YAML reads as one but the calendar has not (`2026-02-30`, `2026-13-01`): PyYAML raises a
        bare ValueError, which escaped as a traceback; a YAML error naming the line and the value."""
        try:
            return super().construct_yaml_timestamp(node)
        except (ValueError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"'{str(node.value)[:64]}' is not a calendar date or time ({exc})", node.start_mark
            ) from None


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:timestamp", _UniqueKeyLoader.construct_yaml_timestamp)


def read_yaml(text: str, source: str) -> object:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
