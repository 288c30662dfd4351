"""Tampering that moves data between chains or repeats it, and a registry that cannot be read: what
docs/audit.md promises `multihome audit verify` reports for each (checked through the real CLI)."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from multihome.audit import AuditLog

from .helpers import call, cli, config, key_files


class TwoChains:
    """One directory written by two gateway lifetimes (two signed, cleanly closed chains)."""

    def __init__(self, tmp) -> None:
        self.dir = str(tmp / "audit")
        self.pub = key_files(tmp)[2]
        priv = str(tmp / "signing.pem")

        async def life() -> str:
            log = AuditLog(config(self.dir, priv, checkpoint_every_events=5, max_batch=5))
            await log.start()
            for i in range(8):
                await log.append("call", call(i))
            await log.close()
            return log.chain

        self.a = asyncio.run(life())
        self.b = asyncio.run(life())

    def path(self, chain: str, cps: bool = False) -> str:
        return os.path.join(self.dir, chain + (".checkpoints.jsonl" if cps else ".jsonl"))

    def lines(self, chain: str) -> list[bytes]:
        with open(self.path(chain), "rb") as f:
            return f.read().splitlines(keepends=True)

    def write(self, chain: str, lines: list[bytes]) -> None:
        with open(self.path(chain), "wb") as f:
            f.write(b"".join(lines))

    def swap(self, cps: bool) -> None:
        for with_cps in (False, True) if cps else (False,):
            a, b = self.path(self.a, with_cps), self.path(self.b, with_cps)
            shutil.move(a, a + ".tmp")
            shutil.move(b, a)
            shutil.move(a + ".tmp", b)

    def verify(self, *extra: str):
        return cli("verify", "--dir", self.dir, "--public-key", self.pub, *extra)


@pytest.fixture
def two(tmp_path):
    t = TwoChains(tmp_path)
    out = t.verify()
    assert out.returncode == 0, out.stdout + out.stderr
    return t


@pytest.mark.parametrize("cps", [False, True], ids=["events-only", "with-checkpoints"])
def test_two_chain_files_swapped_are_found(two, cps):
    """Renaming chain A's file to chain B's (and back): every event names its own chain and its genesis
    value is derived from that name, so a chain under another name is not that chain."""
    two.swap(cps)
    out = two.verify()
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"FAIL {two.a}.jsonl line 1 (seq 0): inserted: the event belongs to chain {two.b}" in out.stdout
    assert f"FAIL {two.b}.jsonl line 1 (seq 0): inserted: the event belongs to chain {two.a}" in out.stdout


def test_an_event_copied_from_another_chain_is_inserted(two):
    a, b = two.lines(two.a), two.lines(two.b)
    two.write(two.a, [*a[:4], b[4], *a[4:]])  # B's seq 4, valid hash, put where A's seq 4 belongs
    out = two.verify()
    assert out.returncode == 1, out.stdout
    assert f"FAIL {two.a}.jsonl line 5 (seq 4): inserted: the event belongs to chain {two.b}" in out.stdout


def test_a_chain_replaced_by_a_rehashed_copy_of_another_is_found(two):
    """The whole of chain B written over chain A (A's file now holds B's events, A's checkpoints kept)."""
    shutil.copy(two.path(two.b), two.path(two.a))
    out = two.verify()
    assert out.returncode == 1
    assert f"FAIL {two.a}.jsonl" in out.stdout


def test_a_line_repeated_verbatim_is_inserted(two):
    lines = two.lines(two.a)
    two.write(two.a, [*lines[:6], lines[5], *lines[6:]])  # seq 5 twice, byte for byte
    out = two.verify()
    assert out.returncode == 1, out.stdout
    assert "(seq 5): inserted: seq 5 appears twice (lines 6 and 7)" in out.stdout


def test_a_head_registry_that_cannot_be_read_exits_2(two, tmp_path):
    """`--database` naming a database that is not there: exit 2, nothing claimed verified."""
    missing = tmp_path / "no-such-dir" / "heads.db"
    out = two.verify("--database", f"sqlite+aiosqlite:///{missing}")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "intact" not in out.stdout.lower()


def test_a_witness_file_that_cannot_be_read_exits_2(two, tmp_path):
    witness = tmp_path / "witness.json"
    witness.write_text('{"format": "multihome.audit.heads.v1", "heads": [')  # cut short
    out = two.verify("--heads", str(witness))
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("audit verify: ")
