"""The one error a config problem raises, from the file, the environment or the command line."""

from __future__ import annotations


class ConfigError(Exception):
    """Config problems, each phrased as `path: what is wrong`; str() gives one per line."""

    def __init__(self, *problems: str) -> None:
        super().__init__(*problems)
        self.problems = list(problems)

    def __str__(self) -> str:
        return "\n".join(self.problems)


# msgspec's words for a date field given a time (YAML reads `2026-12-31T23:59:59+05:00` unquoted as one), and
# what to write instead: taken, its date would be the local one, not the UTC day the field means.
DATE_GOT_TIME = "Expected `date`, got `datetime`"
DATE_NOT_TIME = ": a date here is a whole UTC day, so write it alone (2026-12-31); a time or an offset is not taken"
