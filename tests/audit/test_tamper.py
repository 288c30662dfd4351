"""Tampering with a finished trail: each kind is detected and located, several through the real CLI."""

from __future__ import annotations

import asyncio
import json
import os

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from multihome.audit import AuditLog, verify_dir
from multihome.audit.checkpoint import make_checkpoint
from multihome.audit.events import CallEvent, EventCore, canonical, check_line, seal
from multihome.audit.keys import key_id_of, load_public_key
from multihome.audit.rows import call_body

from .helpers import call, cli, config, documented, key_files

N = 20


@pytest.fixture
def trail(tmp_path):
    """A closed chain of N calls with a checkpoint every 5 events (and a final one)."""
    _, priv, pub = key_files(tmp_path)

    async def main():
        log = AuditLog(config(tmp_path / "audit", priv, checkpoint_every_events=5, max_batch=5))
        await log.start()
        for i in range(N):
            await log.append("call", call(i))
        await log.close()
        return log.chain

    chain = asyncio.run(main())
    directory = tmp_path / "audit"

    class Trail:
        dir = str(directory)
        events = directory / f"{chain}.jsonl"
        checkpoints = directory / f"{chain}.checkpoints.jsonl"
        public = pub
        keys = {key_id_of(load_public_key(pub)): load_public_key(pub)}

        def lines(self) -> list[bytes]:
            return self.events.read_bytes().splitlines(keepends=True)

        def write(self, lines) -> None:
            self.events.write_bytes(b"".join(lines))

        def verify(self):
            return verify_dir(self.dir, self.keys)

    return Trail()


def errors(report) -> list:
    return [(p.kind, p.line, p.seq) for p in report.errors]


def test_clean_trail_passes_the_cli(trail):
    out = cli("verify", "--dir", trail.dir, "--public-key", trail.public)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"1 chains, {N} events" in out.stdout


def test_cli_without_public_key_warns_but_passes(trail):
    out = cli("verify", "--dir", trail.dir)
    assert out.returncode == 0
    assert "signatures were not checked" in out.stderr


def test_edited_field_is_found_by_the_cli(trail):
    lines = trail.lines()
    lines[7] = lines[7].replace(b'"status":200', b'"status":201')  # line 8 is seq 7: line 1 is the genesis record
    trail.write(lines)
    out = cli("verify", "--dir", trail.dir, "--public-key", trail.public)
    assert out.returncode == 1
    assert "line 8 (seq 7): modified: hash mismatch" in out.stdout


def test_reencoded_line_is_modified(trail):
    lines = trail.lines()
    lines[4] = json.dumps(json.loads(lines[4])).encode() + b"\n"  # same content, other bytes (spaces)
    trail.write(lines)
    assert errors(trail.verify()) == [("modified", 5, 4)]


def test_edited_and_rehashed_event_breaks_the_next_link(trail):
    lines = trail.lines()
    event = msgspec.json.decode(lines[9])
    event.pop("hash")
    event["body"]["tenant"] = "ten_other"
    lines[9], _ = seal(EventCore(**event))
    trail.write(lines)
    assert errors(trail.verify()) == [("unlinked", 11, 10)]


def test_deleted_event_is_found_by_the_cli(trail):
    lines = trail.lines()
    del lines[12]
    trail.write(lines)
    out = cli("verify", "--dir", trail.dir, "--public-key", trail.public)
    assert out.returncode == 1
    assert "line 13 (seq 13): deleted: seq 12 missing before this line" in out.stdout


def test_swapped_events_are_reordered(trail):
    lines = trail.lines()
    lines[5], lines[6] = lines[6], lines[5]
    trail.write(lines)
    report = trail.verify()
    assert errors(report) == [("reordered", 6, 6)]
    assert "seq 5 appears later at line 7" in report.errors[0].message


def test_truncated_tail_is_found_by_the_cli(trail):
    trail.write(trail.lines()[:-3])
    out = cli("verify", "--dir", trail.dir, "--public-key", trail.public)
    assert out.returncode == 1
    assert "truncated" in out.stdout and "events 18..20 were cut" in out.stdout


def test_truncated_tail_is_found_even_without_the_public_key(trail):
    trail.write(trail.lines()[:-3])
    assert [p.kind for p in verify_dir(trail.dir).errors] == ["truncated"]


def test_inserted_event_with_valid_hash_is_named(trail):
    lines = trail.lines()
    original = msgspec.json.decode(lines[10])  # seq 10
    original.pop("hash")
    original["body"]["request_id"] = "req_forged"
    forged, _ = seal(EventCore(**original))  # same seq and prev, hash recomputed
    lines.insert(10, forged)
    trail.write(lines)
    report = trail.verify()
    assert errors(report) == [("inserted", 11, 10)]
    assert "line 11 was inserted" in report.errors[0].message


def test_inserted_event_with_the_whole_tail_rehashed_is_caught_by_checkpoints(trail):
    lines = trail.lines()
    events = [msgspec.json.decode(line) for line in lines]
    fake = dict(events[13], body={**events[13]["body"], "request_id": "req_forged"})
    events.insert(13, fake)
    prev = events[12]["hash"]
    rewritten = lines[:13]
    for seq, event in enumerate(events[13:], start=13):  # a perfect chain, recomputed end to end
        event = {k: v for k, v in event.items() if k != "hash"}
        line, prev = seal(EventCore(**{**event, "seq": seq, "prev": prev}))
        rewritten.append(line)
    trail.write(rewritten)
    report = trail.verify()
    kinds = [p.kind for p in report.errors]
    assert kinds and set(kinds) <= {"rewritten", "inserted"}
    assert ("rewritten", None, 15) in errors(report)  # the checkpoint at seq 15 no longer matches


def test_checkpoint_signed_by_another_key_is_forged(trail, tmp_path):
    other = Ed25519PrivateKey.generate()
    chain = trail.events.name[: -len(".jsonl")]
    head = msgspec.json.decode(trail.lines()[-1])["hash"]
    legit_id = next(iter(trail.keys))
    with open(trail.checkpoints, "ab") as f:
        f.write(make_checkpoint(other, legit_id, chain, N, head, 1.0))  # claims the real key id
        f.write(make_checkpoint(other, key_id_of(other.public_key()), chain, N, head, 2.0))  # its own id
    out = cli("verify", "--dir", trail.dir, "--public-key", trail.public)
    assert out.returncode == 1
    assert out.stdout.count("forged_checkpoint") == 2
    assert "signature does not match" in out.stdout and "unknown key" in out.stdout


def test_checkpoint_with_an_altered_head_is_forged(trail):
    cps = trail.checkpoints.read_bytes().splitlines(keepends=True)
    cp = msgspec.json.decode(cps[2])  # cps[0] signs the genesis record (seq 0)
    cp["head"] = "0" * 64
    cps[2] = msgspec.json.encode(cp) + b"\n"
    trail.checkpoints.write_bytes(b"".join(cps))
    assert [(p.kind, p.seq) for p in trail.verify().errors] == [("forged_checkpoint", 10)]
    # Without the key the altered head still disagrees with the chain.
    assert [(p.kind, p.seq) for p in verify_dir(trail.dir).errors] == [("rewritten", 10)]


def test_event_appended_after_a_clean_close_is_inserted(trail):
    lines = trail.lines()
    last = msgspec.json.decode(lines[-1])
    extra, _ = seal(
        EventCore(chain=last["chain"], seq=N + 1, time=last["time"], prev=last["hash"], kind="call", body=last["body"])
    )
    trail.write([*lines, extra])
    assert [p.kind for p in trail.verify().errors] == ["inserted"]


def test_torn_last_line_is_a_warning_when_no_checkpoint_covers_it(tmp_path):
    _, priv, pub = key_files(tmp_path)

    async def main():
        log = AuditLog(config(tmp_path / "a", priv, checkpoint_every_events=4))
        await log.start()
        for i in range(6):
            await log.append("call", call(i))
        # Simulate a crash: no clean close (no final checkpoint); then a half-written line.
        log._stopping = True
        log._wake.set()
        log._thread.join(5)
        return log.chain

    chain = asyncio.run(main())
    events = tmp_path / "a" / f"{chain}.jsonl"
    cps = tmp_path / "a" / f"{chain}.checkpoints.jsonl"
    cps.write_bytes(b"".join(cps.read_bytes().splitlines(keepends=True)[:-1]))  # drop the final checkpoint
    with open(events, "ab") as f:
        f.write(b'{"body":{"request_id":"req_000006","sta')
    out = cli("verify", "--dir", str(tmp_path / "a"), "--public-key", pub)
    assert out.returncode == 0, out.stdout
    assert "line 8 (seq 7): torn_tail" in out.stderr
    # The same torn line under a checkpoint that covers it: a durable event was cut.
    lines = events.read_bytes().splitlines(keepends=True)
    events.write_bytes(b"".join(lines[:6]) + lines[6].rstrip(b"\n"))  # tear seq 6, which is past checkpoint 4
    assert cli("verify", "--dir", str(tmp_path / "a"), "--public-key", pub).returncode == 0
    events.write_bytes(b"".join(lines[:4]) + lines[4][:40])  # tear seq 4, covered by the checkpoint at 4
    out = cli("verify", "--dir", str(tmp_path / "a"), "--public-key", pub)
    assert out.returncode == 1 and "truncated" in out.stdout


def test_deleted_chain_file_with_checkpoints_is_reported(trail):
    os.remove(trail.events)
    assert [p.kind for p in trail.verify().errors] == ["deleted"]


# -- property: canonical round trip, and any single-byte change is caught -------------------------
text = st.text(min_size=0, max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    tenant=text,
    model=text,
    status=st.integers(100, 599),
    latency=st.floats(0, 1e6, allow_nan=False),
    tools=st.lists(st.tuples(text, text), max_size=3),
    flip=st.integers(0, 10_000),
    bit=st.integers(0, 7),
)
def test_canonical_round_trip_and_single_byte_changes(tenant, model, status, latency, tools, flip, bit):
    record = msgspec.structs.replace(
        call(1, tenant=tenant, model_group=model, status=status), latency_ms=latency, tool_calls=tuple(tools)
    )
    kind, body = call_body(record)  # the bytes the writer writes: the documented body, canonical
    assert (kind, body) == (b"call", canonical(documented(record)))
    line, digest = seal(EventCore(chain="chn_x", seq=3, time=1.5, prev="p" * 64, kind="call", body=msgspec.Raw(body)))
    event, recomputed, problem = check_line(line)
    assert problem is None and recomputed == digest
    assert msgspec.convert(event["body"], CallEvent) == documented(record)
    data = bytearray(line.rstrip(b"\n"))
    data[flip % len(data)] ^= 1 << bit
    try:
        _, _, problem = check_line(bytes(data))
    except msgspec.DecodeError:
        return  # no longer JSON: verify reports it as modified
    assert problem is not None


def test_the_running_writer_verifies_its_own_trail_with_its_own_key(tmp_path):
    # What the console's Audit page and GET /admin/v1/audit/verify show: the writer's key checks the
    # signatures (no public key to configure), and a modified line is a failure.
    _, priv, _ = key_files(tmp_path)

    async def main():
        log = AuditLog(config(tmp_path / "audit", priv, checkpoint_every_events=2))
        await log.start()
        for i in range(4):
            await log.append("call", call(i))
        report = await asyncio.to_thread(log.verify)
        assert report.ok and report.events >= 4 and report.checkpoints >= 1
        assert not [p for p in report.problems if p.kind == "unsigned"]
        path = tmp_path / "audit" / f"{log.chain}.jsonl"
        lines = path.read_bytes().splitlines(keepends=True)
        lines[2] = lines[2].replace(b'"status":200', b'"status":201')
        path.write_bytes(b"".join(lines))
        tampered = await asyncio.to_thread(log.verify)
        assert not tampered.ok and tampered.errors[0].kind == "modified"
        await log.close()

    asyncio.run(main())
