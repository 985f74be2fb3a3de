"""Shared fixtures: a private PostgreSQL server for the companion's district backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg_cluster import create_database, pg_bin, private_postgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1; yields an admin DSN (without database)."""
    bindir = pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (scripts/setup.sh installs postgresql)")
    with private_postgres(bindir) as dsn:
        yield dsn


@pytest.fixture
def postgres_dsn(postgres_server: str) -> str:
    """A fresh, empty database on the private server for one test."""
    return create_database(postgres_server)
