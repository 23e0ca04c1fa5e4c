"""A throwaway PostgreSQL cluster for tests and benchmarks: the server binaries on the machine,
a data folder and a unix socket in a temporary folder, stopped and removed at the end.

``initdb`` and ``postgres`` refuse to run as root (CI runs as root), so as root the server runs as
the unprivileged ``nobody`` through ``setpriv``; the folder is then handed over to it. The server
also listens on 127.0.0.1 (a free port) so password authentication can be tested over TCP:
the superuser ``postgres`` is trusted on the socket, every other role needs its password.

Also fixtures (imported by ``conftest.py``): ``pg_cluster`` for the session, ``pg_demo`` (the demo
corpus in an eScriptorium database) and ``demo_store``, the demo in each store in turn. Nothing is
skipped: without server binaries the tests fail.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

SUPERUSER = "postgres"
#: the read-only role exports connect as (SELECT grants only): proves the source never writes
READER, READER_PASSWORD = "reader", "s3cret-Pa55"
#: the session's demo corpus, in both stores
DEMO_OPTIONS: dict[str, Any] = dict(
    documents=2, parts=4, lines=12, image_size=(600, 800), image_format="jpeg", seed=0
)
HBA = f"""\
local all {SUPERUSER} trust
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
"""


def server_bindir() -> Path:
    """Where ``initdb``/``pg_ctl`` are: ``pg_config --bindir``, else the newest /usr/lib/postgresql/*/bin."""
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    candidates += [Path(p) for p in reversed(versions)]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl): install postgresql")


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgCluster:
    """One running cluster. ``dsn(db)`` connects as the superuser over the socket."""

    def __init__(self, *, preload_stat_statements: bool = True) -> None:
        self.bindir = server_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._as: list[str] = []
        self.preload = preload_stat_statements
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            self._as = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
            self._owner = (nobody.pw_uid, nobody.pw_gid)
        else:
            self._owner = (os.getuid(), os.getgid())

    def _run(self, *args: str) -> None:
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        proc = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, env=env, check=False, cwd=self.root
        )
        if proc.returncode:
            raise RuntimeError(
                f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}"
                f"\n{self.log.read_text() if self.log.exists() else ''}"
            )

    def start(self) -> PgCluster:
        self.socket_dir.mkdir()
        os.chown(self.root, *self._owner)
        os.chown(self.socket_dir, *self._owner)
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        (self.data / "pg_hba.conf").write_text(HBA)
        self._start()
        with self.connect() as conn:
            conn.execute(f"CREATE ROLE {READER} LOGIN PASSWORD '{READER_PASSWORD}'")
        return self

    def _start(self) -> None:
        options = [
            f"-p {self.port}",
            f"-k {self.socket_dir}",
            "-c listen_addresses=127.0.0.1",
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
            "-c max_connections=60",
            "-c shared_buffers=32MB",
        ]
        if self.preload:
            options.append("-c shared_preload_libraries=pg_stat_statements")
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "-o",
            " ".join(options),
            "start",
        )

    def restart(self) -> None:
        """A fast restart: every connection is dropped."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        self._start()

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- connecting --------------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        return f"host={self.socket_dir} port={self.port} dbname={dbname} user={user}"

    def url(
        self, dbname: str, user: str = READER, password: str | None = READER_PASSWORD, *, tcp: bool = False
    ) -> str:
        """A ``postgresql://`` URL: over TCP, or over the socket (``?host=`` the socket folder)."""
        auth = f"{user}:{password}@" if password else f"{user}@"
        if tcp:
            return f"postgresql://{auth}127.0.0.1:{self.port}/{dbname}"
        return f"postgresql://{auth}/{dbname}?host={self.socket_dir}&port={self.port}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(self.dsn(dbname), autocommit=True)

    def create_database(self, name: str, *, grant_reader: bool = False) -> str:
        """A new empty database; returns its name."""
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        if grant_reader:
            self.grant_reader(name)
        return name

    def grant_reader(self, name: str) -> None:
        """SELECT on every table to the reader role, nothing else."""
        with self.connect(name) as conn:
            conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER}")


@dataclass(frozen=True, slots=True)
class Store:
    """Where a corpus is, as the CLI takes it: ``--corpus X`` (+ ``--media-root`` for a database)."""

    kind: str
    corpus: str
    media_root: Path | None = None

    @property
    def args(self) -> list[str]:
        return ["--corpus", self.corpus] + (["--media-root", str(self.media_root)] if self.media_root else [])


def demo_database(cluster: PgCluster, name: str, folder: Path, **options: Any) -> Store:
    """A new database holding the demo (``build_demo`` options), readable by the reader role."""
    from pipeline.pgdemo import build_postgres_demo

    cluster.create_database(name)
    build_postgres_demo(
        cluster.url(name, user=SUPERUSER, password=None), media_root=folder / "media", **options
    )
    cluster.grant_reader(name)
    return Store("postgresql", cluster.url(name), folder / "media")


@pytest.fixture(scope="session")
def pg_demo(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """The session's demo corpus in an eScriptorium database; read-only for tests."""
    return demo_database(pg_cluster, "demo", tmp_path_factory.mktemp("pgdemo"), **DEMO_OPTIONS)


#: parts of the large document (more than ten pages of parts)
BIG_PARTS = 1200


@pytest.fixture(scope="session")
def pg_faulty(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A small demo of its own, for tests that break it (and repair it after)."""
    return demo_database(
        pg_cluster,
        "faulty",
        tmp_path_factory.mktemp("faulty"),
        documents=2,
        parts=3,
        lines=8,
        image_size=(300, 400),
        seed=3,
    )


@pytest.fixture(scope="session")
def pg_big(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One document of BIG_PARTS parts, for faults in the middle of an export and statement counts."""
    return demo_database(
        pg_cluster,
        "big",
        tmp_path_factory.mktemp("big"),
        documents=1,
        parts=BIG_PARTS,
        lines=12,
        image_size=(200, 280),
        link_images=True,
    )


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def demo_store(request: pytest.FixtureRequest, demo_corpus: Path) -> Store:
    """The same demo corpus from each store in turn: an SQLite file, then eScriptorium's PostgreSQL."""
    if request.param == "sqlite":
        return Store("sqlite", str(demo_corpus))
    return request.getfixturevalue("pg_demo")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL cluster for the whole test session, stopped and deleted at the end."""
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
