"""A keyring on a local key file over the migrated database of tests/conftest.py's `db_url` (SQLite,
then PostgreSQL), for the state store."""

from __future__ import annotations

import msgspec
import pytest

from multihome.config.kms import KmsConfig
from multihome.crypto import init_key_file, open_keyring
from multihome.state import StateStore
from multihome.storage.engine import create_engine


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def engine(db_url):
    e = create_engine(db_url)
    yield e
    await e.dispose()


@pytest.fixture
def kms_config(tmp_path) -> KmsConfig:
    init_key_file(tmp_path / "kms.key")
    return msgspec.convert({"backend": "local", "local": {"key_file": str(tmp_path / "kms.key")}}, KmsConfig)


@pytest.fixture
async def state(db_url, kms_config):
    engine = create_engine(db_url)
    keyring = open_keyring(kms_config, engine)
    store = StateStore(engine, keyring)
    yield store
    await store.close()  # its SQLite threads
    await keyring.close()
    await engine.dispose()
