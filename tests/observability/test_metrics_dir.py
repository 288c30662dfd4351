"""The multiprocess metrics directory an operator names (`PROMETHEUS_MULTIPROC_DIR`, docs/metrics.md): `serve`
empties it of an earlier run's metric files, and only of those."""

from __future__ import annotations

import sqlite3

import pytest

from multihome.observability.metrics_dir import MULTIPROC_ENV, per_run

EARLIER_RUN = ("counter_101.db", "histogram_101.db", "gauge_livesum_102.db", "gauge_max_7.db", "summary_9.db")


def test_an_earlier_runs_metric_files_are_deleted_and_the_directory_kept(tmp_path, monkeypatch):
    chosen = tmp_path / "prom"
    chosen.mkdir()
    for name in EARLIER_RUN:
        (chosen / name).write_bytes(b"\0" * 16)
    (chosen / "notes.txt").write_text("kept")
    monkeypatch.setenv(MULTIPROC_ENV, str(chosen))
    with per_run() as used:
        assert used == str(chosen) and not list(chosen.glob("*.db"))
    assert chosen.is_dir() and (chosen / "notes.txt").read_text() == "kept"


def test_a_directory_holding_the_gateways_database_is_refused_untouched(tmp_path, monkeypatch):
    """Before: every `*.db` file there was deleted at start, the gateway's own SQLite database among them."""
    database = tmp_path / "mh.db"
    with sqlite3.connect(database) as conn:
        conn.execute("create table usage (id integer)")
    for name in EARLIER_RUN:
        (tmp_path / name).write_bytes(b"\0" * 16)
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    with pytest.raises(SystemExit, match=r"holds files that are not metrics \(mh\.db\)"):
        with per_run():
            pass
    assert sqlite3.connect(database).execute("select count(*) from usage").fetchone() == (0,)
    assert all((tmp_path / name).exists() for name in EARLIER_RUN)  # nothing deleted
