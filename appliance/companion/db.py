"""Async access to the companion's SQL database: SQLite for one school, PostgreSQL for a district.

Why async: a companion serves many kiosks from one event loop; a query that blocked the loop would stall
every kiosk's token request behind it. SQLite runs on one dedicated thread (its connection never leaves
that thread); PostgreSQL goes through psycopg's async connection pool.

SQL is written once with ``?`` placeholders and translated for PostgreSQL. Anything that must be
race-free across requests *and* across companion instances (rate limits, budgets) runs inside
``transaction()``, which is ``BEGIN IMMEDIATE`` on SQLite (one writer at a time, other processes wait on
the busy timeout) and a real transaction on PostgreSQL (combine with ``SELECT … FOR UPDATE`` or an
advisory lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from appliance.companion.dsn import is_postgres, redact, scrub

Args = Sequence[Any]

#: How long a SQLite writer waits for another process's write lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 10_000
POOL_MAX = 10
POOL_TIMEOUT_S = 5.0
"""How long a request waits for a PostgreSQL connection before it is answered 503 (the database is down,
or every connection is busy)."""
RETRY_AFTER_S = 5
"""What a 503 for an unreachable database tells clients to wait before they try again."""


class DatabaseError(RuntimeError):
    """The database cannot be opened or used; the message says what to check."""


class DatabaseUnavailable(DatabaseError):
    """The database is unreachable right now (restarting, network, every connection busy): worth retrying."""


class Queries(Protocol):
    """What both a database and an open transaction offer."""

    engine: str

    async def execute(self, sql: str, args: Args = ()) -> int: ...

    async def fetchone(self, sql: str, args: Args = ()) -> tuple[Any, ...] | None: ...

    async def fetchall(self, sql: str, args: Args = ()) -> list[tuple[Any, ...]]: ...


class Database(Queries, Protocol):
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Queries]: ...

    async def close(self) -> None: ...


async def open_database(spec: str | Path) -> Database:
    """``postgresql://…`` opens PostgreSQL; anything else is a SQLite file path (``:memory:`` for tests)."""
    text = str(spec)
    if is_postgres(text):
        return await PostgresDatabase.open(text)
    if "://" in text:  # a misspelt scheme is no file name: say so rather than create a file named after it
        raise DatabaseError(f"{redact(text)} is neither a SQLite file nor a postgresql:// address")
    return await SqliteDatabase.open(text)


# -- SQLite ---------------------------------------------------------------------------------------
class _SqliteQueries:
    """Queries on the database's own thread; used directly inside a transaction."""

    engine = "sqlite"

    def __init__(self, owner: SqliteDatabase) -> None:
        self._owner = owner

    async def execute(self, sql: str, args: Args = ()) -> int:
        return await self._owner._call(lambda db: db.execute(sql, tuple(args)).rowcount)

    async def fetchone(self, sql: str, args: Args = ()) -> tuple[Any, ...] | None:
        return await self._owner._call(lambda db: db.execute(sql, tuple(args)).fetchone())

    async def fetchall(self, sql: str, args: Args = ()) -> list[tuple[Any, ...]]:
        return await self._owner._call(lambda db: db.execute(sql, tuple(args)).fetchall())


class SqliteDatabase:
    """One connection on one thread. Calls outside a transaction wait for a running transaction to finish,
    so they never land inside it."""

    engine = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="companion-sqlite")
        self._lock = asyncio.Lock()
        self._db: sqlite3.Connection | None = None
        self._queries = _SqliteQueries(self)

    @classmethod
    async def open(cls, path: str) -> SqliteDatabase:
        database = cls(path)
        try:
            await database._call_raw(database._connect)
        except (OSError, sqlite3.Error) as exc:
            database._thread.shutdown(wait=False)
            raise DatabaseError(f"cannot open the SQLite database {path}: {exc}") from None
        return database

    def _connect(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # Lessons are children's words: owner-only whatever the umask. SQLite gives its -wal and -shm
            # files the database file's own mode, so creating the file 0600 first covers all three.
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(self.path + suffix, 0o600)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        # Deleted and overwritten content (an erased lesson, a transcript reduced by retention) is zeroed
        # in the file instead of left in free space. Many SQLite builds default to OFF; never rely on the
        # distribution's compile options.
        db.execute("PRAGMA secure_delete=ON")
        self._db = db

    async def _call_raw(self, fn: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    async def _call(self, fn: Any) -> Any:
        db = self._db
        if db is None:
            raise DatabaseError("the database is closed")
        try:
            return await self._call_raw(lambda: fn(db))
        except sqlite3.Error as exc:
            raise DatabaseError(f"SQLite error on {self.path}: {exc}") from exc

    async def execute(self, sql: str, args: Args = ()) -> int:
        async with self._lock:
            return await self._queries.execute(sql, args)

    async def fetchone(self, sql: str, args: Args = ()) -> tuple[Any, ...] | None:
        async with self._lock:
            return await self._queries.fetchone(sql, args)

    async def fetchall(self, sql: str, args: Args = ()) -> list[tuple[Any, ...]]:
        async with self._lock:
            return await self._queries.fetchall(sql, args)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Queries]:
        async with self._lock:
            # IMMEDIATE takes the write lock now, so two companions on one file serialise here rather
            # than both reading a count and both writing past a limit.
            await self._call(lambda db: db.execute("BEGIN IMMEDIATE"))
            try:
                yield self._queries
            except BaseException:
                await self._call(lambda db: db.execute("ROLLBACK"))
                raise
            await self._call(lambda db: db.execute("COMMIT"))

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await self._call_raw(db.close)
        self._thread.shutdown(wait=True)


# -- PostgreSQL -----------------------------------------------------------------------------------
def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


@contextlib.contextmanager
def _unavailable_as_database_errors() -> Iterator[None]:
    """psycopg's "cannot reach or lost the server" errors (and the pool's timeout) as DatabaseUnavailable,
    which the companion answers 503 with Retry-After; any other psycopg error is a bug and stays one."""
    import psycopg
    from psycopg_pool import PoolTimeout

    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
        raise DatabaseUnavailable(f"PostgreSQL is unavailable: {type(exc).__name__}: {exc}") from exc


class _PostgresQueries:
    engine = "postgresql"

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, args: Args = ()) -> int:
        with _unavailable_as_database_errors():
            cur = await self._conn.execute(_pg(sql), tuple(args))
            return cur.rowcount

    async def fetchone(self, sql: str, args: Args = ()) -> tuple[Any, ...] | None:
        with _unavailable_as_database_errors():
            cur = await self._conn.execute(_pg(sql), tuple(args))
            return await cur.fetchone()

    async def fetchall(self, sql: str, args: Args = ()) -> list[tuple[Any, ...]]:
        with _unavailable_as_database_errors():
            cur = await self._conn.execute(_pg(sql), tuple(args))
            return await cur.fetchall()


class PostgresDatabase:
    """psycopg 3's async pool; every statement outside ``transaction()`` autocommits."""

    engine = "postgresql"

    def __init__(self, dsn: str, pool: Any) -> None:
        self.path = dsn
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str) -> PostgresDatabase:
        try:
            import psycopg
            from psycopg_pool import AsyncConnectionPool
        except ImportError:
            raise DatabaseError("PostgreSQL needs psycopg: pip install 'stella-kiosk[companion]'") from None
        try:  # one plain connection first: a wrong DSN fails now with the server's own words, not a pool timeout
            probe = await psycopg.AsyncConnection.connect(dsn, connect_timeout=10)
            await probe.close()
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot reach PostgreSQL at {redact(dsn)}: {scrub(str(exc).strip(), dsn)}") from None
        # Each connection is checked as it is handed out: after a database restart every pooled connection
        # is dead, and without the check each one failed one request before the pool noticed.
        database = cls(dsn, None)
        pool = AsyncConnectionPool(dsn, min_size=1, max_size=POOL_MAX, open=False, kwargs={"autocommit": True},
                                   check=database._check, timeout=POOL_TIMEOUT_S)
        database._pool = pool
        try:
            await pool.open(wait=True, timeout=15)
        except Exception as exc:
            await pool.close()
            raise DatabaseError(f"cannot reach PostgreSQL at {redact(dsn)}: {scrub(str(exc).strip(), dsn)}") from None
        return database

    async def _check(self, conn: Any) -> None:
        """The pool's check of a connection before handing it out. One dead connection means the server
        went away (a restart, a failover), so every idle one is swept at once: the pool would otherwise
        try them one by one, backing off between tries, and time out with new connections waiting."""
        from psycopg_pool import AsyncConnectionPool

        try:
            await AsyncConnectionPool.check_connection(conn)
        except Exception:
            await self._pool.check()
            raise

    async def execute(self, sql: str, args: Args = ()) -> int:
        with _unavailable_as_database_errors():
            async with self._pool.connection() as conn:
                return await _PostgresQueries(conn).execute(sql, args)

    async def fetchone(self, sql: str, args: Args = ()) -> tuple[Any, ...] | None:
        with _unavailable_as_database_errors():
            async with self._pool.connection() as conn:
                return await _PostgresQueries(conn).fetchone(sql, args)

    async def fetchall(self, sql: str, args: Args = ()) -> list[tuple[Any, ...]]:
        with _unavailable_as_database_errors():
            async with self._pool.connection() as conn:
                return await _PostgresQueries(conn).fetchall(sql, args)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Queries]:
        with _unavailable_as_database_errors():
            async with self._pool.connection() as conn, conn.transaction():
                yield _PostgresQueries(conn)

    async def close(self) -> None:
        await self._pool.close()
