"""Database passwords stay secret: a DSN's errors never print its password, however malformed the DSN, and
the command line refuses a DSN with a password (every user of the machine sees it in `ps`): it comes from
the environment or an owner-only file instead."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.companion.db import DatabaseError, open_database

ROOT = Path(__file__).resolve().parent.parent
PASSWORD_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"))
#: Written raw into a DSN only when it cannot turn the host into a name to look up (no slow DNS in a test).
RAW_SAFE = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789%@:!$&'()*+,;=-._~",
                   min_size=6, max_size=24)
MALFORMED = ["", "%zz", " y", "?x y", "?connect_timeout=1&bad", "#frag"]


def open_error(dsn: str) -> str:
    try:
        asyncio.run(open_database(dsn))
    except DatabaseError as exc:
        return str(exc)
    raise AssertionError("a database on port 9 was opened")


@settings(max_examples=80, deadline=None)
@given(secret=st.one_of(st.text(PASSWORD_CHARS, min_size=6, max_size=24).map(lambda p: ("quoted", p)),
                        RAW_SAFE.map(lambda p: ("raw", p))),
       host=st.sampled_from(["127.0.0.1:9", "[::1", "[::1]:9", "127.0.0.1:9 "]),
       where=st.sampled_from(["userinfo", "query"]), tail=st.sampled_from(MALFORMED))
def test_dsn_errors_never_show_the_password(secret: tuple[str, str], host: str, where: str, tail: str) -> None:
    how, password = secret[0], "Zq" + secret[1]  # a mark no fixed wording of an error contains
    written = quote(password, safe="") if how == "quoted" else password
    if where == "userinfo":
        dsn = f"postgresql://stella:{written}@{host}/x{tail}"
    else:
        dsn = f"postgresql://stella@{host}/x?connect_timeout=1&password={written}{tail}"
    message = open_error(dsn)
    assert password not in message and written not in message, message
    assert message.startswith("cannot reach PostgreSQL at postgresql://stella@"), message


def companion(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", "companion", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, input=stdin,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "sk-test", **(env or {})})


PASSWORD_DSN = "postgresql://stella:Sup3r-s3cret-pw@127.0.0.1:9/x?connect_timeout=1"


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["doctor"], ["add-kiosk", "room-1"],
                                     ["revoke-kiosk", "room-1"], ["set-budget", "room-1", "10"], ["export"],
                                     ["add-user", "ada"], ["erase", "--kiosk", "room-1", "--yes"],
                                     ["group", "list"], ["group", "add", "Elm School"]])
def test_a_password_on_the_command_line_is_refused(command: list[str]) -> None:
    done = companion(*command, "--db", PASSWORD_DSN, stdin="a-long-enough-password\n")
    assert done.returncode == 2, done.stderr
    assert "Sup3r-s3cret-pw" not in done.stderr + done.stdout
    assert "STELLA_COMPANION_DB" in done.stderr and "--db-file" in done.stderr


def test_the_dsn_comes_from_the_environment_or_an_owner_only_file(tmp_path: Path) -> None:
    """Both reach the database (here: port 9, so the error shows which DSN was used, redacted)."""
    by_env = companion("add-kiosk", "room-1", env={"STELLA_COMPANION_DB": PASSWORD_DSN})
    assert by_env.returncode == 1 and "cannot reach PostgreSQL at postgresql://stella@127.0.0.1:9/x" in by_env.stderr
    secret = tmp_path / "db.dsn"
    secret.write_text(PASSWORD_DSN + "\n")
    secret.chmod(0o644)
    loose = companion("add-kiosk", "room-1", "--db-file", str(secret))
    assert loose.returncode == 2 and "chmod 600" in loose.stderr
    secret.chmod(0o600)
    by_file = companion("add-kiosk", "room-1", "--db-file", str(secret))
    assert by_file.returncode == 1 and "cannot reach PostgreSQL at postgresql://stella@127.0.0.1:9/x" in by_file.stderr
    for done in (by_env, loose, by_file):
        assert "Sup3r-s3cret-pw" not in done.stderr + done.stdout
    # A file-based SQLite path works too, and a DSN without a password may still go on the command line.
    sqlite = tmp_path / "db.path"
    sqlite.write_text(str(tmp_path / "c.db"))
    sqlite.chmod(0o600)
    assert companion("add-kiosk", "room-1", "--db-file", str(sqlite)).returncode == 0
    assert companion("add-kiosk", "room-1", "--db", "postgresql://stella@127.0.0.1:9/x?connect_timeout=1"
                     ).returncode == 1


def test_a_config_file_holding_a_database_password_must_be_owner_only(tmp_path: Path) -> None:
    config = tmp_path / "companion.toml"
    config.write_text(f'db_path = "{PASSWORD_DSN}"\n')
    config.chmod(0o644)
    loose = companion("serve", "--port", "0", "--config", str(config))
    assert loose.returncode == 78 and f"chmod 600 {config}" in loose.stderr
    assert "Sup3r-s3cret-pw" not in loose.stderr + loose.stdout


def test_trust_proxy_in_the_config_file_names_proxies(tmp_path: Path) -> None:
    import argparse

    from appliance.companion.cli import build_config

    config = tmp_path / "companion.toml"
    for text, expected in (('trust_proxy = ["10.0.0.1", "::1"]', ("10.0.0.1", "::1")), ("trust_proxy = true", True),
                           ('trust_proxy = "127.0.0.1"', "127.0.0.1")):
        config.write_text(text + "\n")
        assert build_config(argparse.Namespace(config=str(config)), "sk-test").trust_proxy == expected
    config.write_text('trust_proxy = ["nginx.local"]\n')
    with pytest.raises(ValueError, match=r"trust_proxy: 'nginx.local' is not an IP address"):
        build_config(argparse.Namespace(config=str(config)), "sk-test")
