"""Rollback: someone with the audit directory cuts a chain and its checkpoint file back to an earlier
valid state, removes a final checkpoint, deletes a checkpoint file or a whole chain. Each is found
through a later chain's genesis link (no registry needed) or, for the newest chain, through the head
registry in the database or its exported copy; an honest crash and restart still passes."""

from __future__ import annotations

import asyncio
import json
import logging
import os

import msgspec
import pytest
import sqlalchemy as sa

from multihome.audit import AuditLog, head_publisher, verify_dir
from multihome.audit.heads import load_file, load_from_database
from multihome.audit.keys import key_id_of, load_public_key

from .helpers import call, cli, config, key_files

EVENTS = 12  # per lifetime; checkpoints at 0, 5, 10 and the final one at 12


class Trail:
    """A directory written by several gateway lifetimes, each a chain, with a registry database."""

    def __init__(self, tmp, url: str | None, key: bool = True) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.dir = str(tmp / "audit")
        self.url = url
        self.key, self.pub = key_files(tmp)[1:] if key else (None, None)
        self.chains: list[str] = []

    def live(self, events: int = EVENTS, crash: bool = False, trail: str | None = None) -> str:
        """One gateway lifetime; `crash`: the writer stops dead (no final checkpoint, like kill -9)."""

        async def main():
            log = AuditLog(
                config(self.dir, self.key, checkpoint_every_events=5, max_batch=5, trail=trail), heads_url=self.url
            )
            await log.start()
            for i in range(events):
                await log.append("call", call(i))
            if crash:
                log._stopping = True
                log._checkpoints = False  # no final checkpoint, nothing more registered
                log._wake.set()
                log._thread.join(5)
                if log.heads is not None:
                    await log.heads.close()  # let what was published before the "crash" land
            else:
                await log.close()
            return log.chain

        self.chains.append(asyncio.run(main()))
        return self.chains[-1]

    def path(self, chain: str, cps: bool = False) -> str:
        return os.path.join(self.dir, chain + (".checkpoints.jsonl" if cps else ".jsonl"))

    def lines(self, chain: str, cps: bool = False) -> list[bytes]:
        with open(self.path(chain, cps), "rb") as f:
            return f.read().splitlines(keepends=True)

    def cut_back(self, chain: str, seq: int) -> None:
        """What an attacker with the directory can do: the chain and its checkpoint file back to the
        (validly signed) checkpoint at `seq`."""
        events = [line for line in self.lines(chain) if json.loads(line)["seq"] <= seq]
        checkpoints = [
            line
            for line in self.lines(chain, cps=True)
            if json.loads(line)["seq"] <= seq and not json.loads(line)["final"]
        ]
        assert json.loads(checkpoints[-1])["seq"] == seq
        with open(self.path(chain), "wb") as f:
            f.write(b"".join(events))
        with open(self.path(chain, cps=True), "wb") as f:
            f.write(b"".join(checkpoints))

    def keys(self) -> dict:
        public = load_public_key(self.pub)
        return {key_id_of(public): public}

    def verify(self, *extra: str):
        return cli("verify", "--dir", self.dir, "--public-key", self.pub, *extra)


@pytest.fixture
def db(sqlite_database):
    return sqlite_database()


@pytest.fixture
def trail(tmp_path, db):
    t = Trail(tmp_path, db)
    for _ in range(3):
        t.live()
    return t


def failures(out) -> str:
    return out.stdout + out.stderr


# -- the honest trail ------------------------------------------------------------------------------


def test_honest_trail_passes_with_registry_and_links(trail):
    out = trail.verify("--database", trail.url)
    assert out.returncode == 0, failures(out)
    assert f"3 chains, {3 * EVENTS} events" in out.stdout and "3 head registry entries" in out.stdout
    assert out.stderr == "", out.stderr  # every chain's end is vouched for: nothing left open
    genesis = [json.loads(trail.lines(chain)[0]) for chain in trail.chains]
    assert [e["kind"] for e in genesis] == ["chain_opened"] * 3
    assert genesis[0]["body"]["links"] == []
    # Each new chain links the one before, at its final seq and head.
    for before, record in zip(trail.chains, genesis[1:]):
        last = json.loads(trail.lines(before)[-1])
        assert record["body"]["links"] == [{"chain": before, "seq": EVENTS, "head": last["hash"], "final": True}]


def test_honest_crash_and_restart_passes(tmp_path, db):
    t = Trail(tmp_path, db)
    t.live()
    crashed = t.live(events=8, crash=True)  # checkpoints at 0 and 5, events 6..8 unsigned
    with open(t.path(crashed), "ab") as f:
        f.write(b'{"body":{"request_id":"req_torn","sta')  # the line being written when it died
    t.live()
    out = t.verify("--database", t.url)
    assert out.returncode == 0, failures(out)
    for line in out.stderr.splitlines():  # only what a crash leaves may be said
        assert "torn_tail" in line or "unsigned_tail" in line, line
    # The restarted chain vouches for the crashed one's whole durable tail, not just its last checkpoint.
    link = json.loads(t.lines(t.chains[-1])[0])["body"]["links"]
    assert [(x["chain"], x["seq"], x["final"]) for x in link] == [(crashed, 8, False)]


# -- 1. cut back to an earlier checkpoint, checkpoint file too --------------------------------------


def test_newest_chain_cut_back_is_found_by_the_registry(trail):
    newest = trail.chains[-1]
    trail.cut_back(newest, 5)
    out = trail.verify("--database", trail.url)
    assert out.returncode == 1, failures(out)
    assert (
        f"FAIL {newest}.jsonl (seq {EVENTS}): rolled_back: the head registry expects seq {EVENTS} "
        f"(closed by a final checkpoint), found seq 5"
    ) in out.stdout


def test_newest_chain_cut_back_without_registry_passes_but_says_so(trail):
    newest = trail.chains[-1]
    trail.cut_back(newest, 5)
    out = trail.verify()
    assert out.returncode == 0, failures(out)
    assert "no_head_registry" in out.stderr and "rollback of the newest chain cannot be detected" in out.stderr
    assert newest in out.stderr  # it names the chain left open


def test_earlier_chain_cut_back_is_found_by_the_next_chains_link(trail):
    first = trail.chains[0]
    trail.cut_back(first, 10)
    out = trail.verify()  # no registry: the link alone
    assert out.returncode == 1, failures(out)
    assert (
        f"FAIL {first}.jsonl (seq {EVENTS}): rolled_back: the genesis record of {trail.chains[1]} expects "
        f"seq {EVENTS} (closed by a final checkpoint), found seq 10"
    ) in out.stdout


def test_cut_back_is_found_by_an_exported_registry(trail, tmp_path):
    export = tmp_path / "witness.json"
    made = cli("heads", "export", "--database", trail.url, "--out", str(export))
    assert made.returncode == 0, failures(made)
    assert "exported 3 chain heads of 1 trail(s)" in made.stderr
    heads = load_file(str(export))
    assert {h.checkpoint.chain for h in heads} == set(trail.chains) and all(h.checkpoint.final for h in heads)
    trail.cut_back(trail.chains[-1], 10)
    out = trail.verify("--heads", str(export))
    assert out.returncode == 1, failures(out)
    assert f"expects seq {EVENTS} (closed by a final checkpoint), found seq 10" in out.stdout


# -- 2. the final checkpoint of a cleanly closed chain removed --------------------------------------


@pytest.mark.parametrize("which", ["newest", "earlier"])
def test_removed_final_checkpoint_is_found(trail, which):
    chain = trail.chains[-1] if which == "newest" else trail.chains[0]
    checkpoints = trail.lines(chain, cps=True)
    assert json.loads(checkpoints[-1])["final"]
    with open(trail.path(chain, cps=True), "wb") as f:
        f.write(b"".join(checkpoints[:-1]))
    out = trail.verify("--database", trail.url) if which == "newest" else trail.verify()
    assert out.returncode == 1, failures(out)
    assert f"FAIL {chain}.jsonl (seq {EVENTS}): rolled_back:" in out.stdout
    assert (
        f"expects the final checkpoint at seq {EVENTS}, found its last checkpoint at seq 10: the final "
        "checkpoint was removed"
    ) in out.stdout


def test_events_appended_after_a_removed_final_checkpoint_are_inserted(trail):
    chain = trail.chains[-1]
    with open(trail.path(chain, cps=True), "wb") as f:
        f.write(b"".join(trail.lines(chain, cps=True)[:-1]))
    out = trail.verify("--database", trail.url)
    assert "rolled_back" in out.stdout
    from multihome.audit.events import EventCore, seal

    last = msgspec.json.decode(trail.lines(chain)[-1])
    extra, _ = seal(
        EventCore(chain=chain, seq=EVENTS + 1, time=last["time"], prev=last["hash"], kind="call", body=last["body"])
    )
    with open(trail.path(chain), "ab") as f:
        f.write(extra)
    report = verify_dir(trail.dir, trail.keys(), load_from_database(trail.url))
    assert ("inserted", EVENTS + 1) in [(p.kind, p.seq) for p in report.errors]


# -- 3. a checkpoint file deleted while a signing key is configured ---------------------------------


def test_deleted_checkpoint_file_is_an_error_even_without_registry_or_key(trail):
    chain = trail.chains[-1]
    os.remove(trail.path(chain, cps=True))
    for out in (trail.verify(), cli("verify", "--dir", trail.dir)):
        assert out.returncode == 1, failures(out)
        assert (
            f"FAIL {chain}.jsonl: deleted: the checkpoint file is missing but its genesis record says it is "
            "signed with ed25519:" in out.stdout
        )


def test_emptied_checkpoint_file_is_an_error(trail):
    chain = trail.chains[-1]
    open(trail.path(chain, cps=True), "wb").close()
    out = trail.verify()
    assert (
        out.returncode == 1 and f"FAIL {chain}.jsonl (seq 0): rolled_back: the checkpoint file is empty" in out.stdout
    ), failures(out)


# -- 4. a whole chain deleted ------------------------------------------------------------------------


def test_deleted_earlier_chain_is_found_by_the_next_chains_link(trail):
    first = trail.chains[0]
    os.remove(trail.path(first))
    os.remove(trail.path(first, cps=True))
    out = trail.verify()
    assert out.returncode == 1, failures(out)
    assert (
        f"FAIL {first}.jsonl (seq {EVENTS}): deleted: the chain file is gone, but the genesis record of "
        f"{trail.chains[1]} (seq {EVENTS}, closed) expects it: expected seq {EVENTS}, found nothing"
    ) in out.stdout


def test_deleted_newest_chain_is_found_by_the_registry(trail):
    newest = trail.chains[-1]
    os.remove(trail.path(newest))
    os.remove(trail.path(newest, cps=True))
    out = trail.verify("--database", trail.url)
    assert out.returncode == 1, failures(out)
    assert f"FAIL {newest}.jsonl (seq {EVENTS}): deleted: the chain file is gone, but the head registry" in out.stdout


def test_every_chain_deleted_is_found_by_the_registry(trail):
    for chain in trail.chains:
        os.remove(trail.path(chain))
        os.remove(trail.path(chain, cps=True))
    report = verify_dir(trail.dir, trail.keys(), load_from_database(trail.url))
    assert sorted(p.chain for p in report.errors if p.kind == "deleted") == sorted(trail.chains)


# -- the registry itself ------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", ["kept", "removed"])
def test_registry_entry_altered_in_the_database_is_forged(trail, sig):
    async def alter():
        from multihome.storage.engine import create_engine

        engine = create_engine(trail.url)
        async with engine.begin() as conn:
            row = (await conn.execute(sa.text("SELECT chain, checkpoint FROM audit_heads LIMIT 1"))).one()
            cp = json.loads(row.checkpoint)
            cp["seq"] = 3  # "roll back" the registry entry without the signing key
            if sig == "removed":
                cp["sig"] = ""  # posing as the unsigned head of a chain written without a key
            await conn.execute(
                sa.text("UPDATE audit_heads SET checkpoint = :c, seq = 3 WHERE chain = :k"),
                {"c": json.dumps(cp), "k": row.chain},
            )
        await engine.dispose()
        return row.chain

    chain = asyncio.run(alter())
    out = trail.verify("--database", trail.url)
    assert out.returncode == 1 and f"FAIL {chain}.jsonl (seq 3): forged_head" in out.stdout, failures(out)


def test_a_registry_row_that_cannot_be_read_is_named_and_the_rest_verified_and_exported(trail, tmp_path):
    """One damaged audit_heads row used to stop `verify` and `heads export` outright (exit 2, nothing checked
    or exported): now verify names it (an error) beside what it checked, and the export holds the others."""

    async def damage():
        from multihome.storage.engine import create_engine

        engine = create_engine(trail.url)
        async with engine.begin() as conn:
            chain = (await conn.execute(sa.text("SELECT chain FROM audit_heads ORDER BY chain LIMIT 1"))).scalar()
            await conn.execute(sa.text("UPDATE audit_heads SET checkpoint = 'torn' WHERE chain = :k"), {"k": chain})
            rows = (await conn.execute(sa.text("SELECT count(*) FROM audit_heads"))).scalar()
        await engine.dispose()
        return chain, rows

    chain, rows = asyncio.run(damage())
    out = trail.verify("--database", trail.url)
    assert out.returncode == 1 and f"FAIL {chain}.jsonl: unreadable_head" in out.stdout, failures(out)
    assert out.stdout.count("FAIL") == 1 and f"{rows - 1} head registry entries" in out.stdout, failures(out)
    export = tmp_path / "witness.json"
    made = cli("heads", "export", "--database", trail.url, "--out", str(export))
    assert made.returncode == 1 and f"chain {chain} " in made.stderr, made.stderr
    assert len(load_file(str(export))) == rows - 1


def test_two_directories_share_one_registry(tmp_path, db):
    """Replicas with their own audit directories and one database: each verifies against its own trail."""
    a, b = Trail(tmp_path / "a", db), Trail(tmp_path / "b", db)
    for t in (a, b, a, b):
        t.live(events=3)
    heads = load_from_database(db)
    assert len(heads) == 4
    for t in (a, b):
        report = verify_dir(t.dir, t.keys(), heads)
        assert report.ok and report.heads == 2 and not report.problems, [str(p) for p in report.problems]
    a.cut_back(a.chains[-1], 0)
    assert [p.kind for p in verify_dir(a.dir, a.keys(), heads).errors] == ["rolled_back"]
    assert verify_dir(b.dir, b.keys(), heads).ok


def test_unsigned_trail_registers_unsigned_heads(tmp_path, db):
    t = Trail(tmp_path, db, key=False)
    t.live()
    t.live()
    report = verify_dir(t.dir, None, load_from_database(db))
    assert report.ok and report.heads == 2, [str(p) for p in report.problems]
    events = t.lines(t.chains[-1])
    with open(t.path(t.chains[-1]), "wb") as f:
        f.write(b"".join(events[:4]))  # no checkpoint file to roll back: only the chain
    report = verify_dir(t.dir, None, load_from_database(db))
    assert [(p.kind, p.chain) for p in report.errors] == [("rolled_back", t.chains[-1])]


def test_an_unreachable_registry_never_holds_back_audit_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(head_publisher, "CLOSE_DEADLINE_S", 0.3)
    (tmp_path / "db.sqlite").mkdir()  # a directory where the database file should be: SQLite cannot open it
    nowhere = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"

    async def main():
        log = AuditLog(config(tmp_path / "audit", key_files(tmp_path)[1], checkpoint_every_events=2), heads_url=nowhere)
        await log.start()
        seqs = [await asyncio.wait_for(log.append("call", call(i)), 5) for i in range(10)]
        await asyncio.wait_for(log.close(), 10)
        return seqs, log.heads.published

    seqs, published = asyncio.run(main())
    assert seqs == list(range(1, 11)) and published == 0


def test_a_stop_with_the_registry_unreachable_gives_up_on_it_soon_and_warns(monkeypatch, caplog):
    # A database that keeps failing is an outage: the checkpoint files hold what the registry lacks and the
    # next chain opened in the directory links the closed one, so close() stops trying after _OUTAGE_S
    # (however long its deadline) and says so in a warning, not an error.
    monkeypatch.setattr(head_publisher, "CLOSE_DEADLINE_S", 600.0)
    nowhere = "postgresql+asyncpg://mh:mh@127.0.0.1:9/mh"  # a PostgreSQL that is down: nothing listens there
    from multihome.audit.checkpoint import new_checkpoint
    from multihome.audit.head_publisher import HeadPublisher

    async def main():
        pub = HeadPublisher(nowhere, "host:/a", "host")
        await pub.start()
        pub.offer(new_checkpoint(None, None, "chn_x", 10, "h10", 1.0))
        await asyncio.wait_for(pub.close(), 120)

    asyncio.run(main())
    said = [r for r in caplog.records if r.name == "multihome.audit"]
    assert not [r for r in said if r.levelno >= logging.ERROR], [r.getMessage() for r in said]
    [line] = [r.getMessage() for r in said if "did not take" in r.getMessage()]
    assert "chn_x" in line and "ConnectionRefusedError" in line and "checkpoint files hold them" in line, line


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_registry_moves_forward_only_on_both_backends(backend, sqlite_database, pg_database):
    url = sqlite_database("r.db") if backend == "sqlite" else pg_database()
    from multihome.audit.checkpoint import new_checkpoint
    from multihome.audit.head_publisher import HeadPublisher

    async def main():
        pub = HeadPublisher(url, "host:/a", "host")
        await pub.start()
        pub.offer(new_checkpoint(None, None, "chn_x", 10, "h10", 1.0))
        for _ in range(200):  # bounded: until it is written
            if pub.published:
                break
            await asyncio.sleep(0.02)
        pub.offer(new_checkpoint(None, None, "chn_x", 4, "h4", 2.0))  # late and older: must not win
        pub.offer(new_checkpoint(None, None, "chn_y", 0, "g", 3.0))
        await pub.close()

    asyncio.run(main())
    heads = {h.checkpoint.chain: h.checkpoint for h in load_from_database(url)}
    assert (heads["chn_x"].seq, heads["chn_x"].head) == (10, "h10") and heads["chn_y"].seq == 0


def test_a_registry_write_that_times_out_is_warned_of_and_written_once_the_database_answers(
    sqlite_database, monkeypatch, caplog
):
    # A connect or statement cut at its timeout raises a TimeoutError with no message: the warning read its first
    # line, an IndexError that ended the publisher (the registry was never written again until a restart) and
    # failed the gateway's shutdown with a traceback.
    from multihome.audit.checkpoint import new_checkpoint
    from multihome.audit.head_publisher import HeadPublisher
    from multihome.storage import engine as storage_engine

    monkeypatch.setattr(head_publisher, "_QUIET_S", 0.0)
    monkeypatch.setattr(head_publisher, "_RETRY_S", (0.01,))
    real = storage_engine.write_connection
    timeouts = [TimeoutError() for _ in range(3)]

    async def hung_then_answering(engine):
        if timeouts:
            raise timeouts.pop()
        return await real(engine)

    monkeypatch.setattr(storage_engine, "write_connection", hung_then_answering)
    url = sqlite_database("heads.db")

    async def main():
        pub = HeadPublisher(url, "host:/a", "host")
        await pub.start()
        with caplog.at_level(logging.WARNING, logger="multihome.audit"):
            pub.offer(new_checkpoint(None, None, "chn_x", 10, "h10", 1.0))
            for _ in range(500):  # bounded: 5 s
                if pub.published:
                    break
                await asyncio.sleep(0.01)
        await asyncio.wait_for(pub.close(), 30)
        return pub.published

    assert asyncio.run(main()) == 1
    warned = [r.getMessage() for r in caplog.records if "cannot write the head registry" in r.getMessage()]
    assert warned and "TimeoutError" in warned[0], warned


def test_a_registry_read_that_times_out_says_so_instead_of_raising_index_error(sqlite_database, monkeypatch):
    # A statement cut at its timeout raises an error with no message: the CLI's error read its first line, an
    # IndexError (a traceback) instead of the HeadsError that says which database could not be read.
    from multihome.audit import heads
    from multihome.audit.heads import HeadsError

    async def timed_out(engine, trail):
        driver = TimeoutError()
        raise sa.exc.OperationalError("SELECT", {}, driver) from driver  # as SQLAlchemy wraps the driver's

    monkeypatch.setattr(heads, "read_heads", timed_out)
    with pytest.raises(HeadsError, match="cannot read the head registry from .*: TimeoutError"):
        load_from_database(sqlite_database("heads.db"))
