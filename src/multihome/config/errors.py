"""The one error a config problem raises, from the file, the environment or the command line."""

from __future__ import annotations


class ConfigError(Exception):
    """Config problems, each phrased as `path: what is wrong`; str() gives one per line."""

    def __init__(self, *problems: str) -> None:
        super().__init__(*problems)
        self.problems = list(problems)

    def __str__(self) -> str:
        return "\n".join(self.problems)
