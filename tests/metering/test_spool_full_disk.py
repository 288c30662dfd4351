"""A full disk under the usage spool (metering/spool.py): never a crash, never a SIGBUS, and nothing
accepted lost. The spool's files are allocated up front (posix_fallocate), so the disk filling up is
an error when a file is made: at start-up that fails the start with a clear message (a configured
`metering.spool.dir`); while running, the next file is made when the current one is three quarters
full, so when it cannot be made new calls are refused (503 `usage_spool_unavailable`) while the
calls already admitted still have their rows copied into the quarter left; once there is room
again, calls are accepted again.

The full disk is real: a child process in a mount namespace of its own with a 64 KiB tmpfs as its
spool directory (the namespace, and the mount, end with the child). Skipped where that cannot be
made (not root, no `unshare`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")
TESTS = str(Path(__file__).resolve().parents[1])

CHILD = textwrap.dedent(
    """
    import asyncio, json, logging, os, sys
    sys.path[:0] = [{src!r}, {tests!r}]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from multihome.schema.errors import ApiError
    from multihome.storage import open_store
    from metering.test_spool import _metering, _rows
    from metering.conftest import Dep, call, principal

    MOUNT, URL = {mount!r}, {url!r}

    def free() -> int:
        st = os.statvfs(MOUNT)
        return st.f_bavail * st.f_frsize

    async def main():
        out = {{}}
        store = await open_store(URL, migrate=True)
        await store.close()
        spool = os.path.join(MOUNT, "spool")

        # At start-up: not even the first file fits.
        filler = os.open(os.path.join(MOUNT, "filler"), os.O_RDWR | os.O_CREAT)
        os.posix_fallocate(filler, 0, free() - 8192)
        m = _metering(URL, spool, segment_bytes=16384)
        try:
            await m.start()
            out["start"] = "started"
        except RuntimeError as exc:
            out["start"] = str(exc)
        await m.close()
        out["left_after_failed_start"] = sorted(os.listdir(spool))
        os.ftruncate(filler, 0)

        # Running: room for the first file only; rows stay pending (no commit for a minute).
        m = _metering(URL, spool, segment_bytes=16384, flush_interval_ms=60_000, batch_size=100_000)
        await m.start()
        os.posix_fallocate(filler, 0, free())
        inflight, refused, n = [], None, 0
        while refused is None and n < 1000:
            try:
                await m.limiter.admit(principal(), "g", [Dep("dep-a")], 10, 10, f"req{{n}}")
                inflight.append(f"req{{n}}")
                n += 1
            except ApiError as exc:
                refused = exc
            if len(inflight) > 5:  # five calls always in flight, as on a busy gateway
                m.record(call(inflight.pop(0), prompt=100, completion=50))
        out["refused"] = [refused.status, refused.body.code, refused.body.message] if refused else None
        out["admitted"] = n
        for rid in inflight:  # the calls admitted before the refusal end now: their rows still fit
            m.record(call(rid, prompt=100, completion=50))
        w = m.writer
        out["spool_errors"], out["spooled"] = w.spool.errors, w.spool.appended
        os.ftruncate(filler, 0)  # room again
        await asyncio.sleep(1.2)  # the spool tries again once a second
        for i in range(40):  # rotates into the next file
            await m.limiter.admit(principal(), "g", [Dep("dep-a")], 10, 10, f"again{{i}}")
            m.record(call(f"again{{i}}", prompt=100, completion=50))
        out["files_after"] = len(w.spool.files)
        out["down_after"] = w.spool.down is not None
        await m.writer.flush()
        out["rows"] = len(await _rows(m))
        await m.close()
        out["left"] = sorted(os.listdir(spool))
        print(json.dumps(out), flush=True)

    asyncio.run(main())
    """
)


def test_a_full_disk_refuses_new_calls_and_loses_no_admitted_calls_row(tmp_path):
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare to mount a small tmpfs in a namespace of its own")
    mount = tmp_path / "small"
    mount.mkdir()
    code = CHILD.format(src=SRC, tests=TESTS, mount=str(mount), url=f"sqlite+aiosqlite:///{tmp_path / 'u.db'}")
    script = tmp_path / "child.py"
    script.write_text(code)
    shell = f"mount -t tmpfs -o size=64k tmpfs {mount} && exec {sys.executable} {script}"
    proc = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-c", shell],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0 and "mount" in proc.stderr and "permission" in proc.stderr.lower():
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr[-3000:]  # no crash, no SIGBUS
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    assert "metering.spool.dir: cannot write usage spool files in" in out["start"], out["start"]
    assert "No space left on device" in out["start"]
    assert out["left_after_failed_start"] == [], "the file that could not be allocated is gone"

    status, code_, message = out["refused"]
    assert (status, code_) == (503, "usage_spool_unavailable")
    assert "local disk" in message and str(mount) not in message, "clear, and no path of the server"
    assert out["admitted"] >= 15, "the first file's first three quarters were used before refusing"
    assert out["spool_errors"] == 0, "every admitted call's row was copied into the quarter kept for them"
    assert out["spooled"] == out["admitted"]
    assert out["down_after"] is False and out["files_after"] >= 2, "room again: the next file, calls accepted"
    assert out["rows"] == out["admitted"] + 40, "every recorded call's row reached the database"
    assert out["left"] == []
    assert "cannot make the next spool file" in proc.stderr and "usage_spool_unavailable" in proc.stderr
    assert "a new spool file could be made again" in proc.stderr
