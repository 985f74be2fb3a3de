"""Looking for a lesson's words where a database really keeps them: the bytes of a SQLite file and its
``-wal`` / ``-shm`` companions, and the heap (and TOAST) files of a PostgreSQL table under the cluster's data
directory, as ``strings`` or a disk image would see them. Also a SQLite "plain build": a connection whose
``secure_delete`` starts OFF, as it does wherever SQLite was compiled without SQLITE_SECURE_DELETE (Debian's
build turns it on, which would hide a companion that never sets it)."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest


def marker() -> str:
    """Words no other lesson holds: found in a file only if this lesson's text is there."""
    return f"Zebrafinch{uuid.uuid4().hex}"


def sqlite_bytes(path: Path | str) -> bytes:
    """The database file and its write-ahead log and shared-memory index, as they are on disk now."""
    found = b""
    for suffix in ("", "-wal", "-shm"):
        file = Path(f"{path}{suffix}")
        if file.exists():
            found += file.read_bytes()
    return found


def _postgres_heap(dsn: str, table: str) -> bytes:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")  # dirty buffers reach the table's files now
        row = conn.execute("SHOW data_directory").fetchone()
        assert row is not None
        data_dir = Path(row[0])
        relations = [table]
        toast = conn.execute("SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = CAST(%s AS regclass) "
                             "AND reltoastrelid <> 0", (table,)).fetchone()
        if toast:
            relations.append(toast[0])  # long transcripts live out of line, in the TOAST table
        found = b""
        for relation in relations:
            path = conn.execute("SELECT pg_relation_filepath(CAST(%s AS regclass))", (relation,)).fetchone()
            assert path is not None
            first = data_dir / path[0]
            for file in [first, *sorted(first.parent.glob(first.name + ".*"))]:  # 1 GB segments, fsm, vm
                if file.exists():
                    found += file.read_bytes()
        return found


async def postgres_heap(dsn: str, table: str = "sessions") -> bytes:
    """The table's heap and TOAST files (every segment) after a CHECKPOINT."""
    return await asyncio.to_thread(_postgres_heap, dsn, table)


async def database_bytes(db: Path | str) -> bytes:
    """What a disk holds of the companion's lessons: SQLite files, or the PostgreSQL sessions table's heap."""
    text = str(db)
    if text.startswith("postgresql://"):
        return await postgres_heap(text)
    return sqlite_bytes(text)


def plain_sqlite_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every SQLite connection opened from now on starts with ``secure_delete`` OFF, the compile-time default
    of SQLite builds without SQLITE_SECURE_DELETE."""
    connect = sqlite3.connect

    def plain(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.execute("PRAGMA secure_delete=OFF")
        return conn

    monkeypatch.setattr(sqlite3, "connect", plain)
