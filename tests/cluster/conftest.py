"""A fresh cluster (tests/cluster/cluster.py) per test: each test ends by stopping or killing replicas."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .cluster import Cluster


@pytest.fixture
def cluster(tmp_path, pg_server):
    """The cluster's database is made in the worker's PostgreSQL server (tests/conftest.py), not a new one."""
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        pytest.fail("haproxy is not installed; `make test` installs it (scripts/install-system-deps.sh)")
    with Cluster(tmp_path, pg=pg_server) as c:
        yield c
