"""Services shared by every test folder: one throwaway PostgreSQL cluster per test run, and databases
at the head revision handed out as copies of one migrated once (SQLite file copy, PostgreSQL TEMPLATE)."""

from __future__ import annotations

import concurrent.futures
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pg import PostgresServer  # tests/ is on sys.path (rootdir conftest)

# The heaviest files first. `make test` runs `-n auto --dist loadfile --no-loadscope-reorder`: each file
# is one unit of work, handed to the workers in collection order (xdist's default order, most tests
# first, put the few-test kill -9 and cluster files last), so a long file collected late runs alone at
# the end while the other worker idles (longest first is the classic fix). Ranked by summed setup + call +
# teardown (--junitxml) of runs directory by directory (2026-12-07, load 6-11; tests/api after its
# databases became migrated copies), every file of 0.4 % of the summed time or more; a file missing here only
# runs later, so the list can go stale safely.
HEAVY_FIRST = (
    "cluster/test_cluster.py",
    "e2e/test_crash_points.py",
    "cluster/test_outages.py",
    "fuzz/test_openapi_fuzz.py",
    "e2e/test_agent_runs.py",
    "e2e/test_shutdown_under_load.py",  # ~130 s (2026-12-07, measured alone: the load rounds, the 35 s outage stop)
    "crypto/test_suite.py",
    "api/test_unreadable_rows.py",
    "e2e/test_responses_conversation_races.py",
    "e2e/test_responses_background.py",
    "api/test_admin_unreadable_rows.py",
    "state/test_memory.py",
    "state/test_store.py",
    "api/test_responses_background_offboarded.py",
    "api/test_policy_rebuild_failure.py",
    "e2e/test_token_revocation.py",
    "storage/test_migrations.py",
    "e2e/test_usage_spool.py",
    "api/test_admin_mcp_servers.py",
    "e2e/test_responses_conformance.py",
    "e2e/test_console.py",
    "e2e/test_limits.py",
    "storage/test_budgets.py",
    "audit/test_rollback.py",
    "fuzz/test_upstream_properties.py",
    "e2e/test_upstream_threads.py",
    "e2e/test_identity_policy.py",
    "e2e/test_memory_routed.py",
    "storage/test_token_revocations.py",
    "e2e/test_shutdown.py",
    "e2e/test_shared_breakers.py",
    "contracts/test_properties.py",
    "e2e/test_config_reload.py",
    "e2e/test_idempotency_key.py",
    "e2e/test_ssrf.py",
    "e2e/test_stateful_pins.py",
    "e2e/test_client_idle.py",
    "e2e/test_responses_mcp.py",
    "metering/test_spool.py",
    "state/test_background.py",
    "e2e/test_responses_conversation_bound.py",
    "api/test_responses_background_outage.py",
    "e2e/test_responses.py",
    "conformance/test_conformance.py",
    "state/test_memory_tools.py",
    "e2e/test_demo_and_cli.py",
    "e2e/test_billed_attempts.py",
    "e2e/test_telemetry.py",
    "e2e/test_routing.py",
    "e2e/test_workers_limits.py",
    "e2e/test_audit.py",
    "e2e/test_responses_refusals.py",
    "schema/test_item_caps.py",
    "audit/test_tamper.py",
    "e2e/test_memory_space_race.py",
    "e2e/test_memory.py",
    "metering/test_prices.py",
    "state/test_worker.py",
    "contracts/test_unreadable_rows.py",
    "e2e/test_hostile_usage.py",
    "tools/test_mcp_hostile.py",
    "e2e/test_metrics.py",
    "metering/test_redis_failover.py",
    "api/test_unreadable_governance_rows.py",
    "e2e/test_memory_reembed.py",
    "fuzz/test_request_properties.py",
    "storage/test_entitlements.py",
    "e2e/test_contracts_e2e.py",
    "api/test_admin_credentials.py",
    "crypto/test_backends.py",
    "simulators/test_gemini_genai_sdk.py",
    "crypto/test_hot_path.py",
    "simulators/test_bedrock_anthropic_kind.py",
    "e2e/test_gemini.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the files of HEAVY_FIRST first, in its order; the rest keep theirs (the sort is stable)."""
    root = Path(__file__).parent
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}

    def file_rank(item: pytest.Item) -> int:
        try:
            return rank.get(item.path.relative_to(root).as_posix(), len(rank))
        except ValueError:  # collected from outside tests/
            return len(rank)

    items.sort(key=file_rank)


@pytest.fixture(scope="session")
def pg_server():
    """A private PostgreSQL cluster on loopback; each test makes its own database in it."""
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sqlite_head(tmp_path_factory) -> Path:
    """A SQLite file migrated once; `sqlite_database` copies it (the engine is disposed: no WAL left)."""
    from multihome.storage import migrate_sync

    path = tmp_path_factory.mktemp("sqlite-head") / "head.db"
    # On a thread: first asked for by an async fixture perhaps (stored_app.store_url), and migrate_sync runs a loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(migrate_sync, f"sqlite+aiosqlite:///{path}").result()
    return path


@pytest.fixture
def sqlite_database(sqlite_head, tmp_path) -> Callable[..., str]:
    """`sqlite_database(name="multihome.db", migrated=True)`: the URL of a new SQLite file in the test's tmp."""

    def make(name: str = "multihome.db", *, migrated: bool = True) -> str:
        path = tmp_path / name
        if migrated:
            shutil.copyfile(sqlite_head, path)
        return f"sqlite+aiosqlite:///{path}"

    return make


@pytest.fixture
def pg_database(request) -> Iterator[Callable[..., str]]:
    """`pg_database(migrated=True)`: the URL of a new PostgreSQL database, dropped when the test ends
    (a run makes ~1,000: kept, they would fill the cluster's directory with ~300,000 files)."""
    made: list[str] = []
    server: list[PostgresServer] = []

    def make(*, migrated: bool = True) -> str:
        if not server:
            server.append(request.getfixturevalue("pg_server"))
        url = server[0].migrated_database() if migrated else server[0].create_database()
        made.append(url)
        return url

    yield make
    for url in made:
        server[0].drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, sqlite_database, pg_database):
    """A database at the head revision, SQLite then PostgreSQL (a folder's conftest may define its own)."""
    return sqlite_database() if request.param == "sqlite" else pg_database()
