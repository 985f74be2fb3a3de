"""Versioned schema migrations, applied at start inside one transaction.

Each step is a module ``mNNNN_name.py`` here with ``VERSION`` (its number), ``NAME`` and
``async def apply(q: Queries) -> None``. A step runs once: the ``schema_migrations`` table records it.
Steps are written for both engines (``q.engine`` is ``"sqlite"`` or ``"postgresql"``) and must work on a
database that already holds a school's lessons. Two companions starting at once on one PostgreSQL
serialise on an advisory lock; on SQLite the transaction's write lock does the same.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from types import ModuleType

from appliance.companion.db import Database, DatabaseError

#: Any number, the same in every companion: the advisory lock that serialises migrations.
MIGRATION_LOCK = 0x5713_11A0


def steps() -> list[ModuleType]:
    """Every migration module, in version order (a duplicate number is a programming error)."""
    modules = [importlib.import_module(f"{__name__}.{info.name}")
               for info in pkgutil.iter_modules(__path__) if info.name.startswith("m")]
    modules.sort(key=lambda m: m.VERSION)
    versions = [m.VERSION for m in modules]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version: {versions}")
    return modules


def latest_version() -> int:
    return steps()[-1].VERSION


async def migrate(db: Database) -> list[int]:
    """Bring the schema up to date; returns the versions applied now (empty when already current)."""
    applied: list[int] = []
    async with db.transaction() as q:
        if q.engine == "postgresql":
            await q.fetchone("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
        await q.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                        "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)")
        done = {row[0] for row in await q.fetchall("SELECT version FROM schema_migrations")}
        known = steps()
        newest = max(m.VERSION for m in known)
        if done and max(done) > newest:
            raise DatabaseError(f"the database's schema is version {max(done)} but this companion knows only up "
                                f"to {newest}: upgrade the companion (never run an older one on a newer database)")
        for step in known:
            if step.VERSION in done:
                continue
            await step.apply(q)
            await q.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                            (step.VERSION, step.NAME, time.time()))
            applied.append(step.VERSION)
    return applied
