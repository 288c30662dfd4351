"""Content capture's store (crypto/capture.py) on SQLite and PostgreSQL with the local KMS: a batch
the KMS cannot seal stays queued and is written once it can (nothing is lost, nothing half
written); the queue is bounded; what is read back opens only as the row it was written to; a shred
makes one tenant's captures unreadable and leaves the others'."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
import sqlalchemy as sa

from multihome.accounting.capture import Captured
from multihome.accounting.record import CallRecord
from multihome.config.capture import CaptureConfig
from multihome.crypto import KmsUnavailable, open_keyring, shred
from multihome.crypto import capture as capture_module
from multihome.crypto.capture import CaptureReader, CaptureWriter
from multihome.crypto.kms import KmsBackend
from multihome.storage.tables import captures

pytestmark = pytest.mark.anyio


class Switch(KmsBackend):
    """The real local backend behind a switch: while `down`, every call is KmsUnavailable."""

    def __init__(self, inner: KmsBackend) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.down = False

    @property
    def label(self) -> str:
        return self.inner.label

    def _check(self) -> None:
        if self.down:
            raise KmsUnavailable(self.label, "connection refused (test switch)")

    async def generate_data_key(self, kek_id, context, *, create):
        self._check()
        return await self.inner.generate_data_key(kek_id, context, create=create)

    async def decrypt(self, *a):
        self._check()
        return await self.inner.decrypt(*a)

    async def rewrap(self, *a):
        self._check()
        return await self.inner.rewrap(*a)

    async def create_key_version(self, kek_id):
        self._check()
        return await self.inner.create_key_version(kek_id)

    async def destroy(self, kek_id):
        self._check()
        return await self.inner.destroy(kek_id)


def _call(tenant: str, n: int, status: int = 200) -> tuple[Captured, CallRecord]:
    captured = Captured(f'{{"prompt": "{tenant} question {n}"}}'.encode(), 64)
    captured.add(f'{{"answer": "{tenant} reply {n}"}}'.encode())
    record = CallRecord(
        request_id=f"req_{tenant}_{n}",
        started_at=time.time(),
        finished_at=time.time(),
        endpoint="chat",
        tenant=tenant,
        subject="key_x",
        principal_source="api_key",
        model_group="gpt-4o",
        deployment="d",
        status=status,
        outcome="ok",
    )
    return captured, record


async def _rows(engine) -> list:
    async with engine.connect() as conn:
        return (await conn.execute(sa.select(captures).order_by(captures.c.id))).all()


async def _until(check, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def switch(local_kms):
    holder: dict[str, Switch] = {}

    def build(target, where):
        holder["kms"] = Switch(local_kms.build(target, where))
        return holder["kms"]

    keyring = open_keyring(local_kms.config(), None, build=build)  # engine set per test
    return keyring, holder["kms"]


async def test_a_kms_outage_delays_captures_and_loses_none(engine, switch, monkeypatch):
    keyring, kms = switch
    keyring.repo.engine = engine
    monkeypatch.setattr(capture_module, "_RETRY_S", 0.05)
    writer = CaptureWriter(CaptureConfig(tenants=["ten_a", "ten_b"], flush_interval_s=0.02, batch_size=3))
    kms.down = True
    writer.start(keyring, engine)
    for n in range(5):
        for tenant in ("ten_a", "ten_b"):
            writer.record(*_call(tenant, n))
    await asyncio.sleep(0.3)  # several flush attempts, each refused by the KMS
    assert await _rows(engine) == [] and writer.written == 0 and len(writer._queue) == 10
    kms.down = False

    async def all_written() -> bool:
        return len(await _rows(engine)) == 10

    await _until(all_written, "the queued captures to be written")
    await writer.close()
    rows = await _rows(engine)
    assert all(b"question" not in r.sealed and b"reply" not in r.sealed for r in rows)  # sealed, not clear

    reader = CaptureReader(keyring, engine)
    page = await reader.page("ten_a", 100)
    assert [v.id for v in page] == [f"req_ten_a_{n}" for n in range(5)]
    assert page[0].prompt == '{"prompt": "ten_a question 0"}' and page[0].answer == '{"answer": "ten_a reply 0"}'
    assert [v.id for v in await reader.page("ten_a", 2, after=page[1].id)] == ["req_ten_a_2", "req_ten_a_3"]

    # A row copied over another row, or moved to another tenant, does not open as that row.
    async with engine.begin() as conn:
        sealed_1 = (await conn.execute(sa.select(captures.c.sealed).where(captures.c.id == "req_ten_a_1"))).scalar()
        await conn.execute(sa.update(captures).where(captures.c.id == "req_ten_a_0").values(sealed=sealed_1))
        await conn.execute(sa.update(captures).where(captures.c.id == "req_ten_a_4").values(tenant_id="ten_b"))
    page = {v.id: v for v in await reader.page("ten_a", 100)}
    assert page["req_ten_a_0"].unreadable and page["req_ten_a_0"].prompt is None
    assert page["req_ten_a_1"].prompt is not None
    moved = [v for v in await reader.page("ten_b", 100) if v.id == "req_ten_a_4"]
    assert moved[0].unreadable and "another tenant" in moved[0].unreadable

    # A KMS down with nothing cached: the read fails whole (a 503 in the API), no page of holes.
    keyring.forget()
    kms.down = True
    with pytest.raises(KmsUnavailable):
        await reader.page("ten_b", 100)
    kms.down = False

    # Shredding ten_a: its captures stop opening, ten_b's do not.
    await shred(keyring, "ten_a")
    keyring.forget()
    assert all(v.unreadable and v.unreadable.startswith("shredded") for v in await reader.page("ten_a", 100))
    assert [v.prompt for v in await reader.page("ten_b", 100) if v.id.startswith("req_ten_b")] == [
        f'{{"prompt": "ten_b question {n}"}}' for n in range(5)
    ]
    await keyring.close()


async def test_the_queue_is_bounded_and_long_content_is_cut(engine, switch):
    keyring, kms = switch
    keyring.repo.engine = engine
    writer = CaptureWriter(CaptureConfig(tenants=["ten_a"], max_queue=3))
    for n in range(5):
        writer.record(*_call("ten_a", n))
    assert writer.dropped == 2 and [r.request_id for _, r in writer._queue] == [f"req_ten_a_{n}" for n in (2, 3, 4)]

    long = Captured(b"p" * 100, 10)
    for piece in (b"a" * 6, b"b" * 6, b"c"):
        long.add(piece)
    assert long.prompt == b"p" * 10 and long.answer == b"aaaaaabbbb" and long.truncated
    writer.start(keyring, engine)
    writer.record(long, _call("ten_a", 9)[1])
    await writer.close()
    (view,) = [v for v in await CaptureReader(keyring, engine).page("ten_a", 100) if v.id == "req_ten_a_9"]
    assert view.truncated and view.answer == "aaaaaabbbb"
    assert msgspec.json.decode(msgspec.json.encode(view))["truncated"] is True
    await keyring.close()
