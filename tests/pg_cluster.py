"""A throwaway PostgreSQL cluster on 127.0.0.1 (tests and benchmarks of the district backend).

initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` system user; its files
live outside pytest's 0700 temporary tree so that user can reach them.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """A running throwaway cluster: its admin DSN (without database), and stop/start to play an outage."""

    def __init__(self, bindir: Path, data: Path, log: Path, options: str, as_user: list[str], port: int) -> None:
        self.bindir, self.data, self.log, self.options, self.as_user = bindir, data, log, options, as_user
        self.dsn = f"postgresql://stella@127.0.0.1:{port}"

    def _ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args], check=check,
                       capture_output=True)

    def start(self) -> None:
        """Start and wait until it accepts connections (-w)."""
        self._ctl("-w", "-l", str(self.log), "-o", self.options, "start")

    def stop(self, check: bool = True) -> None:
        """Stop now (-m fast: open connections are cut, as in a restart of the database server)."""
        self._ctl("-w", "-m", "fast", "stop", check=check)


@contextmanager
def private_cluster(bindir: Path, *settings: str) -> Iterator[PgCluster]:
    """Start a cluster (extra ``-c name=value`` server settings allowed); stop and delete it afterwards."""
    base = Path(tempfile.mkdtemp(prefix="stella-pg-"))
    data, sockets = base / "data", base / "sock"
    sockets.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sockets, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "stella",
                    "--no-sync"], check=True, capture_output=True)
    port = free_port()
    options = " ".join([f"-p {port} -h 127.0.0.1 -k {sockets} -c fsync=off", *(f"-c {s}" for s in settings)])
    cluster = PgCluster(bindir, data, base / "log", options, as_user, port)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop(check=False)
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def private_postgres(bindir: Path, *settings: str) -> Iterator[str]:
    """Start a cluster (extra ``-c name=value`` server settings allowed); yields an admin DSN without a
    database name; stops and deletes it afterwards."""
    with private_cluster(bindir, *settings) as cluster:
        yield cluster.dsn


def create_database(server: str) -> str:
    """A fresh, empty database on the cluster; returns its DSN."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"
