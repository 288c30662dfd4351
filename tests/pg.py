"""A real, private, throwaway PostgreSQL cluster for tests (Debian's `postgresql` package).

    pg = PostgresServer()          # initdb + start on 127.0.0.1:<free port>, database "multihome"
    url = pg.url                   # postgresql+asyncpg://postgres@127.0.0.1:<port>/multihome
    other = pg.create_database()   # a fresh empty database, returns its URL
    pg.stop()                      # fast shutdown, data directory removed

`initdb` refuses to run as root, so as root the cluster runs as the `postgres` system user (via
`runuser`) in a temp directory it owns. Durability is traded for speed (fsync off): test data only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import asyncpg

from ports import free_port

# Migrated copies made ahead of the tests that ask for one (a run asks for ~1,000).
READY_COPIES = 2
# Taken once: a test may patch asyncpg.Connection.execute to spy on its own statements.
_EXECUTE = asyncpg.Connection.execute


def postgres_bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _major_version(bindir: Path) -> int:
    """15 for "postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)"."""
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=30).stdout
    return int(out.split(")", 1)[1].split(".")[0])


class PostgresServer:
    def __init__(self, dbname: str = "multihome", *, start_timeout: float = 30) -> None:
        bindir = postgres_bin_dir()
        if bindir is None:
            raise RuntimeError(
                "PostgreSQL is not installed; run scripts/install-system-deps.sh (apt-get install postgresql)"
            )
        self.bindir = bindir
        self._as_user: list[str] = []
        self.dir = Path(tempfile.mkdtemp(prefix="multihome-pg-"))
        if os.getuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self.data = self.dir / "data"
        self.port = free_port()
        self.host = "127.0.0.1"
        self.user = "postgres"
        self._started = False
        self._head: str | None = None  # the database `migrated_database` copies, made on first use
        self._admin: _Admin | None = None  # made on first use; closed by `pause` and `stop`
        self._strategy = " STRATEGY = FILE_COPY" if _major_version(bindir) >= 15 else ""  # create_database
        try:
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                self.user,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
                "--locale=C",
            )
            self.resume(start_timeout)
            self._started = True
            self.dbname = dbname
            self.url = self.create_database(dbname)
        except BaseException:
            self.stop()
            raise

    def resume(self, start_timeout: float = 30) -> None:
        """Start the server on its data directory and port (at creation, and after `pause`)."""
        opts = (
            f"-c listen_addresses={self.host} -p {self.port} -c unix_socket_directories={self.dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            opts,
            "-l",
            str(self.dir / "postgres.log"),
            "-w",
            "-t",
            str(int(start_timeout)),
            "start",
        )

    def pause(self) -> None:
        """Stop the server, keeping its data (`resume` brings it back): a database outage for a test."""
        self._close_admin()  # its statements under way end first, not cut by the stop
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def hang(self, hung: bool) -> None:
        """Stop (SIGSTOP) or continue every process of the server: connections stay open, nothing answers (a
        hung server, or a network path that drops packets), unlike `pause`, which refuses them."""
        for pid in self._processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP if hung else signal.SIGCONT)

    def _processes(self) -> list[int]:
        """The postmaster and its children (backends, checkpointer, walwriter...), read from /proc."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        found = [postmaster]
        for stat in glob.glob("/proc/[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(stat).read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == postmaster:  # the field after the state: the parent's pid
                    found.append(int(stat.split("/")[2]))
        return found

    def _run(self, tool: str, *args: str) -> str:
        proc = subprocess.run(
            [*self._as_user, str(self.bindir / tool), *args], capture_output=True, text=True, timeout=60, cwd=self.dir
        )
        if proc.returncode != 0:
            log = self.dir / "postgres.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stderr or proc.stdout}\n{tail}")
        return proc.stdout

    def url_for(self, dbname: str) -> str:
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        return self._run(
            "psql",
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            self.user,
            "-d",
            dbname,
            "-v",
            "ON_ERROR_STOP=1",
            "-AtXq",
            "-c",
            sql,
        )

    def _admin_conn(self) -> _Admin:
        if self._admin is None:
            self._admin = _Admin(self)
        return self._admin

    def _close_admin(self) -> None:
        if self._admin is not None:
            admin, self._admin = self._admin, None
            admin.close()

    def create_sql(self, dbname: str, template: str | None = None) -> str:
        """FILE_COPY copies the template's files as they are; PostgreSQL 15's default (WAL_LOG) writes
        every block through the WAL, which takes about twice as long here (fsync is off, so the
        checkpoint FILE_COPY starts with costs little). A run makes ~1,000 of these."""
        source = f' TEMPLATE "{template}"' if template else ""
        return f'CREATE DATABASE "{dbname}"{source}{self._strategy}'

    def create_database(self, dbname: str | None = None, *, template: str | None = None) -> str:
        """A new database (a copy of `template` if given)."""
        dbname = dbname or "t_" + secrets.token_hex(6)
        self._admin_conn().execute(self.create_sql(dbname, template))
        return self.url_for(dbname)

    def migrated_database(self) -> str:
        """A new database at the head revision: a copy of one migrated once per server (a copy costs
        ~60-300 ms, made ahead of the call; running every migration again costs several times that)."""
        if self._head is None:
            from multihome.storage import migrate_sync

            url = self.create_database("mh_head")
            try:  # on a thread: the caller may be a coroutine (an async fixture), and migrate_sync runs a loop
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    pool.submit(migrate_sync, url).result()
            except BaseException:
                self._admin_conn().execute('DROP DATABASE IF EXISTS "mh_head" WITH (FORCE)')
                raise
            self._head = "mh_head"
        return self.url_for(self._admin_conn().take_copy(self._head))

    def drop_database(self, dbname: str) -> None:
        """Dropped behind the caller (the next statements on the server wait for it; `pause` and `stop` too)."""
        self._admin_conn().drop_later(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

    def stop(self) -> None:
        if self._started:
            with contextlib.suppress(OSError, ValueError, IndexError):  # a failed test's hang: let it stop
                self.hang(False)
        with contextlib.suppress(Exception):  # the server may be down already (a failed test's pause)
            self._close_admin()
        if self._started:
            self._started = False
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                pid_file = self.data / "postmaster.pid"
                if pid_file.exists():
                    try:
                        os.kill(int(pid_file.read_text().split()[0]), 9)
                    except (ProcessLookupError, ValueError):
                        pass
                time.sleep(0.2)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Admin:
    """One connection to a server's `postgres` database, on a thread and event loop of its own: CREATE
    and DROP DATABASE without a psql process each (a `runuser` + `psql` exec costs 40-100 ms, more under
    load), `READY_COPIES` migrated copies made ahead of the tests that take them, and drops done behind
    the tests that end. Statements run one at a time (one connection), in the order they were asked."""

    def __init__(self, server: PostgresServer) -> None:
        self._server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pg-admin", daemon=True)
        self._thread.start()
        self._drops: set[concurrent.futures.Future] = set()
        self._ready: asyncio.Queue[str | BaseException] | None = None  # of copies, made on the first take
        self._filler: asyncio.Task | None = None
        try:
            self._run(self._open())
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _open(self) -> None:
        self._lock = asyncio.Lock()
        server = self._server
        self._conn = await asyncpg.connect(host=server.host, port=server.port, user=server.user, database="postgres")

    async def _execute(self, sql: str) -> None:
        async with self._lock:
            await _EXECUTE(self._conn, sql)

    def execute(self, sql: str) -> None:
        self._run(self._execute(sql))

    def drop_later(self, sql: str) -> None:
        future = asyncio.run_coroutine_threadsafe(self._execute(sql), self._loop)
        self._drops.add(future)
        future.add_done_callback(self._drops.discard)

    def take_copy(self, template: str) -> str:
        """The name of a new copy of `template`, one made ahead if there is one."""
        return self._run(self._take(template))

    async def _take(self, template: str) -> str:
        if self._ready is None:
            self._ready = asyncio.Queue()
            self._room = asyncio.Semaphore(READY_COPIES)
            self._filler = asyncio.create_task(self._fill(template))
        got = await self._ready.get()
        self._room.release()
        if isinstance(got, BaseException):
            raise got
        return got

    async def _fill(self, template: str) -> None:
        assert self._ready is not None
        while True:
            await self._room.acquire()
            name = "t_" + secrets.token_hex(6)
            try:
                await self._execute(self._server.create_sql(name, template))
            except Exception as exc:  # the test that takes it fails with it
                self._ready.put_nowait(exc)
            else:
                self._ready.put_nowait(name)

    def close(self) -> None:
        """After the drops asked for; the copies made ahead and not taken are dropped too."""
        try:
            concurrent.futures.wait(list(self._drops), timeout=60)
            self._run(self._close())
        finally:
            self._stop_loop()

    async def _close(self) -> None:
        async with self._lock:  # no statement under way: the filler waits for its room or for the lock
            if self._filler is not None:
                self._filler.cancel()
        if self._filler is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._filler
        while self._ready is not None and not self._ready.empty():
            left = self._ready.get_nowait()
            if isinstance(left, str):
                await self._execute(f'DROP DATABASE IF EXISTS "{left}" WITH (FORCE)')
        await self._conn.close()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


async def stored_bytes(engine, url: str) -> bytes:
    """Everything a database holds, as bytes to search for plaintext: a SQLite database's files
    (its engine disposed first, so the WAL is complete), or a `pg_dump` of a PostgreSQL one."""
    import asyncio

    if url.startswith("sqlite"):
        await engine.dispose()
        path = url.split("///", 1)[1]
        return b"".join(Path(p).read_bytes() for p in (path, path + "-wal") if Path(p).exists())
    dump_url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    done = await asyncio.to_thread(subprocess.run, ["pg_dump", dump_url], capture_output=True, check=True)
    return done.stdout
