"""The hot path: cache, single-flight, message counting, KMS outage, offloading large payloads."""

from __future__ import annotations

import asyncio

import anyio
import pytest
import sqlalchemy as sa

from multihome.crypto import KmsRefused, KmsUnavailable, open_keyring
from multihome.crypto.envelope import parse_header
from multihome.storage.tables import data_keys

from .harness import Recording

pytestmark = pytest.mark.anyio


def _ring(local_kms, engine, **fields):
    backend = {}

    def build(target, where):
        backend["b"] = Recording(local_kms.build(target, where))
        return backend["b"]

    ring = open_keyring(local_kms.config(**fields), engine, build=build)
    return ring, backend["b"]


async def test_concurrent_seals_make_one_kms_call_per_key(local_kms, db_url):
    from multihome.storage.engine import create_engine

    engine = create_engine(db_url)
    ring, kms = _ring(local_kms, engine)
    try:
        sealed = await asyncio.gather(*(ring.seal("t1", "responses", "r", str(i), b"x") for i in range(500)))
        assert kms.calls == {"generate": 1}
        assert len({parse_header(s).data_key_id for s in sealed}) == 1
        ring.forget()  # cold cache: 500 concurrent opens share one unwrap
        opened = await asyncio.gather(*(ring.open("t1", "responses", "r", str(i), s) for i, s in enumerate(sealed)))
        assert opened == [b"x"] * 500
        assert kms.calls == {"generate": 1, "decrypt": 1}
    finally:
        await engine.dispose()


async def test_no_kms_call_while_cached_then_one_per_ttl(local_kms, engine):
    now = [0.0]
    ring, kms = _ring(local_kms, engine, cache_ttl_s=10)
    ring._clock = lambda: now[0]
    s = await ring.seal("t1", "memory", "m", "1", b"a")
    for _ in range(50):
        await ring.open("t1", "memory", "m", "1", s)
        await ring.seal("t1", "memory", "m", "2", b"b")
    assert kms.calls == {"generate": 1}
    now[0] = 11  # TTL over: one unwrap refreshes it for seals and opens alike
    await asyncio.gather(ring.open("t1", "memory", "m", "1", s), ring.seal("t1", "memory", "m", "3", b"c"))
    assert kms.calls == {"generate": 1, "decrypt": 1}
    # What /metrics reports (multihome_kms_datakey_cache_total): the first seal and the two after the TTL missed.
    assert (ring.cache_hits, ring.cache_misses) == (100, 3)


async def test_data_key_retired_at_message_limit(local_kms, engine):
    ring, kms = _ring(local_kms, engine, max_messages_per_key=10, reserve_block=4)
    sealed = [await ring.seal("t1", "runs", "r", str(i), b"m") for i in range(25)]
    ids = [parse_header(s).data_key_id for s in sealed]
    assert [ids.count(i) for i in dict.fromkeys(ids)] == [8, 8, 8, 1]  # 10 allowed, reserved 4 at a time
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(data_keys.c.state, data_keys.c.messages))).all()
    assert sorted(rows) == [("active", 4), ("retired", 8), ("retired", 8), ("retired", 8)]
    assert all(m <= 10 for _, m in rows)
    for i, s in enumerate(sealed):
        assert await ring.open("t1", "runs", "r", str(i), s) == b"m"


async def test_seal_now_seals_without_awaiting_once_ready_and_every_seal_is_counted(local_kms, engine):
    """Code that cannot await (a stream's converter sealing thinking blocks) seals with the cached key `ready`
    made active; it never calls the KMS itself, and seals past the reservation are covered by the next one."""
    ring, kms = _ring(local_kms, engine, reserve_block=4)
    assert ring.seal_now("t1", "responses", "r", "0", b"x") is None and kms.calls == {}
    await ring.ready("t1", "responses")
    sealed = [ring.seal_now("t1", "responses", "r", str(i), b"x") for i in range(6)]  # 2 past the 4 reserved
    assert kms.calls == {"generate": 1}
    sealed += [await ring.seal("t1", "responses", "r", str(i), b"x") for i in range(6, 10)]  # the next blocks
    for i, s in enumerate(sealed):
        assert s is not None and await ring.open("t1", "responses", "r", str(i), s) == b"x"
    async with engine.connect() as conn:
        counted = (await conn.execute(sa.select(data_keys.c.messages))).scalar_one()
    assert counted >= 10  # never below the true count
    ring.forget("t1")  # shredded or forgotten: not used
    assert ring.seal_now("t1", "responses", "r", "10", b"x") is None


async def test_kms_outage_cached_keys_serve_new_keys_fail_closed(local_kms, engine):
    now = [0.0]
    ring, kms = _ring(local_kms, engine, cache_ttl_s=10, serve_stale_s=100)
    ring._clock = lambda: now[0]
    s = await ring.seal("t1", "credentials", "c", "1", b"cached")
    kms.down = True
    assert await ring.open("t1", "credentials", "c", "1", s) == b"cached"
    await ring.seal("t1", "credentials", "c", "2", b"still sealing under the cached key")
    now[0] = 50  # TTL over, KMS still down: the stale key keeps serving
    assert await ring.open("t1", "credentials", "c", "1", s) == b"cached"
    async with engine.connect() as conn:
        before = (await conn.execute(sa.select(sa.func.count()).select_from(data_keys))).scalar_one()
    with pytest.raises(KmsUnavailable) as exc:  # needs a new data key: fails closed
        await ring.seal("t2", "credentials", "c", "1", b"new tenant")
    assert exc.value.kms == kms.label and "local KMS" in str(exc.value)
    async with engine.connect() as conn:
        after = (await conn.execute(sa.select(sa.func.count()).select_from(data_keys))).scalar_one()
    assert after == before  # nothing half-written
    now[0] = 200  # past serve_stale_s
    with pytest.raises(KmsUnavailable):
        await ring.open("t1", "credentials", "c", "1", s)
    kms.down = False
    assert await ring.open("t1", "credentials", "c", "1", s) == b"cached"


async def test_a_stale_key_asks_the_kms_again_at_most_every_5_s_and_a_refusal_is_never_masked(local_kms, engine):
    """docs/encryption.md "KMS outage": while a stale key serves, the KMS is asked again at most every 5 s;
    `KmsRefused` (a destroyed key, denied access) is never masked by the stale cache: it fails at once."""
    now = [0.0]
    ring, kms = _ring(local_kms, engine, cache_ttl_s=10, serve_stale_s=100)
    ring._clock = lambda: now[0]
    s = await ring.seal("t1", "memory", "m", "1", b"cached")
    kms.down = True
    for t in (50, 51, 54.9):  # TTL over: one unwrap tried at 50, none again until 55
        now[0] = t
        assert await ring.open("t1", "memory", "m", "1", s) == b"cached"
    assert kms.tried.get("decrypt") == 1
    now[0] = 55.1
    assert await ring.open("t1", "memory", "m", "1", s) == b"cached"
    assert kms.tried.get("decrypt") == 2
    kms.down, kms.refusing = False, True
    now[0] = 61  # the KMS answers again, and answers no: the stale key must not hide it
    with pytest.raises(KmsRefused):
        await ring.open("t1", "memory", "m", "1", s)
    with pytest.raises(KmsRefused):
        await ring.seal("t1", "memory", "m", "2", b"new")


async def test_a_hung_kms_is_cut_at_kms_timeout_s_and_cached_keys_keep_serving(local_kms, engine):
    now = [0.0]
    ring, kms = _ring(local_kms, engine, cache_ttl_s=10, serve_stale_s=100, timeout_s=1)
    ring._clock = lambda: now[0]
    s = await ring.seal("t1", "credentials", "c", "1", b"cached")
    kms.hung = True  # every KMS call from here on waits forever
    with anyio.fail_after(30):  # generous; without kms.timeout_s these would never end
        now[0] = 50  # TTL over: the unwrap hangs, the deadline ends it, the stale key serves
        assert await ring.open("t1", "credentials", "c", "1", s) == b"cached"
        with pytest.raises(KmsUnavailable) as exc:  # a new data key: fails closed at the deadline
            await ring.seal("t2", "credentials", "c", "1", b"new tenant")
    assert exc.value.kms == kms.label and "no answer within 1 s (kms.timeout_s)" in str(exc.value)


async def test_store_write_with_kms_down_stores_nothing(local_kms, engine):
    """A store seals before it writes: a failed seal leaves no row behind."""
    ring, kms = _ring(local_kms, engine)
    records = sa.Table(
        "records", sa.MetaData(), sa.Column("id", sa.String, primary_key=True), sa.Column("body", sa.LargeBinary)
    )
    async with engine.begin() as conn:
        await conn.run_sync(records.metadata.create_all)
    kms.down = True

    async def put(rid, body):
        sealed = await ring.seal("t1", "responses", "records", rid, body)
        async with engine.begin() as conn:
            await conn.execute(sa.insert(records).values(id=rid, body=sealed))

    with pytest.raises(KmsUnavailable):
        await put("r1", b"x")
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(records))).scalar_one() == 0
        assert (await conn.execute(sa.select(sa.func.count()).select_from(data_keys))).scalar_one() == 0


async def test_cache_size_bound(local_kms, engine):
    ring, kms = _ring(local_kms, engine, cache_max_keys=3)
    for t in range(6):
        await ring.seal(f"t{t}", "memory", "m", "1", b"x")
    assert len(ring._keys) == 3 and len(ring._active) <= 3


async def test_large_payload_offloaded_and_round_trips(local_kms, engine):
    ring, _ = _ring(local_kms, engine, offload_bytes=1024)
    big = bytes(range(256)) * 1000
    s = await ring.seal("t1", "capture", "c", "1", big)
    assert await ring.open("t1", "capture", "c", "1", s) == big


async def test_unknown_purpose_refused(local_kms, engine):
    ring, _ = _ring(local_kms, engine)
    with pytest.raises(ValueError, match="unknown purpose"):
        await ring.seal("t1", "secrets", "c", "1", b"x")


async def test_open_many_opens_as_open_does_and_refuses_what_it_refuses(local_kms, engine):
    """A chain's records opened at once: the same plaintexts as `open` one by one, across a key rotation
    (records under two keys), and each refusal `open` makes: a record bound to another id, a modified
    one, one of another tenant."""
    from multihome.crypto import CiphertextMismatch, WrongBinding

    ring, kms = _ring(local_kms, engine, max_messages_per_key=3, reserve_block=1)
    records = [(str(i), await ring.seal("t1", "responses", "r", str(i), b"p%d" % i)) for i in range(7)]
    assert len({parse_header(s).data_key_id for _, s in records}) == 3  # three keys, runs of three
    ring.forget()
    assert await ring.open_many("t1", "responses", "r", records) == [b"p%d" % i for i in range(7)]
    assert await ring.open_many("t1", "responses", "r", []) == []
    swapped = [records[0], ("1", records[2][1])]  # record 2's body under record 1's id
    with pytest.raises(CiphertextMismatch):
        await ring.open_many("t1", "responses", "r", swapped)
    tampered = bytearray(records[1][1])
    tampered[-1] ^= 1
    with pytest.raises(CiphertextMismatch):
        await ring.open_many("t1", "responses", "r", [records[0], ("1", bytes(tampered))])
    with pytest.raises(WrongBinding):
        await ring.open_many("t2", "responses", "r", records)
    with pytest.raises(CiphertextMismatch):  # another table's binding
        await ring.open_many("t1", "responses", "other", records)
