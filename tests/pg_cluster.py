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


@contextmanager
def private_postgres(bindir: Path, *settings: str) -> Iterator[str]:
    """Start a cluster (extra ``-c name=value`` server settings allowed); yields an admin DSN without a
    database name; stops and deletes it afterwards."""
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
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"),
                    "-o", options, "start"], check=True, capture_output=True)  # -w waits until it accepts connections
    try:
        yield f"postgresql://stella@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def create_database(server: str) -> str:
    """A fresh, empty database on the cluster; returns its DSN."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"
