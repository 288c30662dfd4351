"""A real, private, throwaway PostgreSQL cluster for tests (Debian's `postgresql` package).

    pg = PostgresServer()          # initdb + start on 127.0.0.1:<free port>, database "multihome"
    url = pg.url                   # postgresql+asyncpg://postgres@127.0.0.1:<port>/multihome
    other = pg.create_database()   # a fresh empty database, returns its URL
    pg.stop()                      # fast shutdown, data directory removed

`initdb` refuses to run as root, so as root the cluster runs as the `postgres` system user (via
`runuser`) in a temp directory it owns. Durability is traded for speed (fsync off): test data only.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ports import free_port


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
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

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

    def create_database(self, dbname: str | None = None, *, template: str | None = None) -> str:
        """A new database (a copy of `template` if given: fast way to hand out migrated databases).

        FILE_COPY copies the template's files as they are; PostgreSQL 15's default (WAL_LOG) writes
        every block through the WAL, which takes about twice as long here (fsync is off, so the
        checkpoint FILE_COPY starts with costs little). A run makes ~1,000 of these."""
        dbname = dbname or "t_" + secrets.token_hex(6)
        source = f' TEMPLATE "{template}"' if template else ""
        self.psql(f'CREATE DATABASE "{dbname}"{source}{self._strategy}')
        return self.url_for(dbname)

    def migrated_database(self) -> str:
        """A new database at the head revision: a copy of one migrated once per server (a copy costs
        ~60 ms; running every migration again costs several times that)."""
        if self._head is None:
            from multihome.storage import migrate_sync

            migrate_sync(self.create_database("mh_head"))
            self._head = "mh_head"
        return self.create_database(template=self._head)

    def drop_database(self, dbname: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

    def stop(self) -> None:
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
