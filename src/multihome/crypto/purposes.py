"""The purposes a tenant's data is sealed for: each (tenant, purpose) has its own data keys, so
shredding or rotating one kind of data never touches another."""

from __future__ import annotations

from typing import Final

PURPOSES: Final = frozenset({"responses", "memory", "runs", "credentials", "capture"})
