"""A real MCP test server (tests/mcp_server.py), and a keyring on a local key file over the migrated
database of tests/conftest.py's `db_url` (SQLite, then PostgreSQL), for the MCP client, the registry
and the resolver."""

from __future__ import annotations

import msgspec
import pytest

from mcp_server import McpTestServer
from multihome.config.kms import KmsConfig
from multihome.crypto import init_key_file, open_keyring
from multihome.storage.engine import create_engine
from multihome.tools.servers import McpServerStore


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def mcp_server():
    """Tools listed three to a page (a client must follow nextCursor)."""
    with McpTestServer(page_size=3) as server:
        yield server


@pytest.fixture
async def store(db_url, tmp_path):
    init_key_file(tmp_path / "kms.key")
    config = msgspec.convert({"backend": "local", "local": {"key_file": str(tmp_path / "kms.key")}}, KmsConfig)
    engine = create_engine(db_url)
    keyring = open_keyring(config, engine)
    yield McpServerStore(keyring, engine)
    await keyring.close()
    await engine.dispose()
