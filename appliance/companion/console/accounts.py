"""Console accounts: argon2 password hashes, browser sessions and login throttling, all in the database.

Nothing lives in process memory, so two companions behind a load balancer behave as one: a session
made on one is valid on the other, and failed logins count against the same limits. Session tokens
are random; only their SHA-256 is stored (like device keys), so the table cannot be replayed.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from appliance.companion.db import Database

ROLES = ("teacher", "admin")
USERNAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
"""Longer passwords are refused before hashing: argon2 on megabytes of input is a cheap denial of service."""

IDLE_S = 12 * 3600
ABSOLUTE_S = 7 * 24 * 3600
TOUCH_EVERY_S = 60
"""``last_seen`` is written at most once a minute per session, not on every page view."""

THROTTLE_WINDOW_S = 15 * 60
MAX_FAILURES_PER_USER = 5
MAX_FAILURES_PER_ADDRESS = 20
#: Serialises login counting across companions on one PostgreSQL (SQLite's write lock does it there).
LOGIN_LOCK = 0x5713_11A1

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class AccountError(ValueError):
    """A bad username, role or password; the message is safe to show to the admin."""


@dataclass(frozen=True)
class User:
    username: str
    role: str
    created_at: float
    disabled_at: float | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class WebSession:
    username: str
    role: str
    csrf_token: str
    token_hash: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_username(name: str) -> str:
    if not USERNAME.match(name):
        raise AccountError("a username is 1-64 letters, digits, '.', '-' or '_'")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"a password has at most {MAX_PASSWORD} characters")
    return password


def new_password() -> str:
    """A password an admin can read out or write down: 4 groups of 4 unambiguous characters."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(4))


async def _hash(password: str) -> str:
    """argon2 takes tens of milliseconds on purpose: off the event loop, or every kiosk would wait."""
    return await asyncio.to_thread(_hasher.hash, password)


async def _verify(stored: str, password: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
    return await asyncio.to_thread(verify)


# -- users ------------------------------------------------------------------------------------------
async def add_user(db: Database, username: str, password: str, role: str) -> None:
    """Create an account; AccountError when the name is taken or anything is malformed."""
    check_username(username)
    check_password(password)
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    hashed = await _hash(password)
    async with db.transaction() as q:
        if await q.fetchone("SELECT 1 FROM users WHERE username = ?", (username,)):
            raise AccountError(f"there is already an account named {username}")
        await q.execute("INSERT INTO users (username, password_hash, role, created_at, disabled_at) "
                        "VALUES (?, ?, ?, ?, NULL)", (username, hashed, role, time.time()))


async def get_user(db: Database, username: str) -> User | None:
    row = await db.fetchone("SELECT username, role, created_at, disabled_at FROM users WHERE username = ?",
                            (username,))
    return User(*row) if row else None


async def list_users(db: Database) -> list[User]:
    rows = await db.fetchall("SELECT username, role, created_at, disabled_at FROM users ORDER BY username")
    return [User(*row) for row in rows]


async def set_password(db: Database, username: str, password: str) -> bool:
    """Replace the password and end every session of the account (a reset must lock out whoever had it)."""
    check_password(password)
    hashed = await _hash(password)
    async with db.transaction() as q:
        changed = await q.execute("UPDATE users SET password_hash = ? WHERE username = ?", (hashed, username))
        await q.execute("DELETE FROM web_sessions WHERE username = ?", (username,))
    return changed > 0


async def set_disabled(db: Database, username: str, disabled: bool) -> bool:
    """Disable (ending every session at once) or enable an account; False when there is no such account."""
    async with db.transaction() as q:
        changed = await q.execute("UPDATE users SET disabled_at = ? WHERE username = ?",
                                  (time.time() if disabled else None, username))
        if disabled:
            await q.execute("DELETE FROM web_sessions WHERE username = ?", (username,))
    return changed > 0


# -- login ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoginResult:
    token: str | None = None
    """The new session's token (set as the cookie) when the login succeeded."""
    throttled: bool = False


async def login(db: Database, username: str, password: str, address: str) -> LoginResult:
    """Check a password under the throttle; a success opens a session.

    Each attempt is counted *before* the password is checked, in the same transaction as the count, so
    parallel guesses on one or many companions cannot slip past the limit; a success then takes its own
    attempt back out of both counts (a school where everyone signs in from one address must not lock itself out)."""
    # A name no account can have shares one bucket (and never reaches SQL: PostgreSQL refuses NUL characters).
    valid = bool(USERNAME.match(username))
    user_bucket, address_bucket = f"login:{username if valid else '?'}", f"login-ip:{address[:64]}"
    now = time.time()
    async with db.transaction() as q:
        if q.engine == "postgresql":
            await q.fetchone("SELECT pg_advisory_xact_lock(?)", (LOGIN_LOCK,))
        await q.execute("DELETE FROM rate_events WHERE bucket IN (?, ?) AND at < ?",
                        (user_bucket, address_bucket, now - THROTTLE_WINDOW_S))
        counts = dict(await q.fetchall("SELECT bucket, COUNT(*) FROM rate_events WHERE bucket IN (?, ?) "
                                       "GROUP BY bucket", (user_bucket, address_bucket)))
        if (counts.get(user_bucket, 0) >= MAX_FAILURES_PER_USER
                or counts.get(address_bucket, 0) >= MAX_FAILURES_PER_ADDRESS):
            return LoginResult(throttled=True)
        reserved = []
        for bucket in (user_bucket, address_bucket):
            added = await q.fetchone("INSERT INTO rate_events (bucket, at) VALUES (?, ?) RETURNING id", (bucket, now))
            assert added is not None  # INSERT ... RETURNING answers with the new row
            reserved.append(added[0])
        row = await q.fetchone("SELECT password_hash FROM users WHERE username = ? AND disabled_at IS NULL",
                               (username,)) if valid else None
    # Unknown and disabled accounts cost the same time as real ones, so timing does not list accounts.
    ok = await _verify(row[0] if row else _DUMMY_HASH, password) and row is not None
    if not ok:
        return LoginResult()
    await db.execute("DELETE FROM rate_events WHERE id IN (?, ?)", reserved)
    await prune_sessions(db)
    return LoginResult(token=await open_session(db, username))


async def open_session(db: Database, username: str) -> str:
    token = secrets.token_urlsafe(32)
    now = time.time()
    await db.execute("INSERT INTO web_sessions (token_hash, username, csrf_token, created_at, expires_at, last_seen) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     (token_hash(token), username, secrets.token_urlsafe(32), now, now + ABSOLUTE_S, now))
    return token


async def session_for(db: Database, token: str) -> WebSession | None:
    """The live session for a cookie value, or None (unknown, expired, idle too long, account disabled)."""
    if not token or len(token) > 200:
        return None
    hashed, now = token_hash(token), time.time()
    row = await db.fetchone(
        "SELECT s.username, u.role, s.csrf_token, s.expires_at, s.last_seen FROM web_sessions s "
        "JOIN users u ON u.username = s.username WHERE s.token_hash = ? AND u.disabled_at IS NULL", (hashed,))
    if row is None:
        return None
    username, role, csrf, expires_at, last_seen = row
    if now >= expires_at or now - last_seen >= IDLE_S:
        await db.execute("DELETE FROM web_sessions WHERE token_hash = ?", (hashed,))
        return None
    if now - last_seen >= TOUCH_EVERY_S:
        await db.execute("UPDATE web_sessions SET last_seen = ? WHERE token_hash = ?", (now, hashed))
    return WebSession(username, role, csrf, hashed)


async def close_session(db: Database, token_hash_value: str) -> None:
    await db.execute("DELETE FROM web_sessions WHERE token_hash = ?", (token_hash_value,))


async def prune_sessions(db: Database) -> int:
    """Drop expired sessions and login failures older than the window (called on each successful sign-in, so
    both stay as small as what is live: a guesser's many names would otherwise stay forever)."""
    now = time.time()
    await db.execute("DELETE FROM rate_events WHERE (bucket LIKE ? OR bucket LIKE ?) AND at < ?",
                     ("login:%", "login-ip:%", now - THROTTLE_WINDOW_S))
    return await db.execute("DELETE FROM web_sessions WHERE expires_at <= ? OR last_seen <= ?", (now, now - IDLE_S))
