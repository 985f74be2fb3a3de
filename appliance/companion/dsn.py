"""Database addresses (DSNs) in messages, without their passwords.

Why a module of its own: a malformed DSN (``%zz``, a space, an unclosed ``[::1``) makes the driver quote it,
password and all, in its error; that error lands in a terminal, a log or a ticket. Every message that may
hold a DSN passes through :func:`scrub`, which knows the DSN it came from and so what to hide, however
broken the DSN is.
"""

from __future__ import annotations

from urllib.parse import unquote

HIDDEN = "***"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(spec: str) -> bool:
    return spec.startswith(POSTGRES_SCHEMES)


def secrets_in(dsn: str) -> list[str]:
    """Everything in ``dsn`` that may be a password: the userinfo after the user's name (up to the last
    ``@``: a password may hold ``@`` itself) and every ``password=`` value; longest first."""
    found: list[str] = []
    _, sep, rest = dsn.partition("://")
    if sep and "@" in rest:
        userinfo = rest.rpartition("@")[0]
        found.append(userinfo.partition(":")[2])
        found.extend(userinfo.split("@")[1:])  # what a parser reading up to the first '@' takes for the host
    for part in dsn.replace("?", "&").split("&"):
        key, sep, value = part.partition("=")
        if sep and key.strip().lower() == "password":
            found.append(value)
    candidates = {c for c in found if c} | {unquote(c) for c in found if c}
    return sorted((c for c in candidates if c), key=len, reverse=True)


def has_password(dsn: str) -> bool:
    return is_postgres(dsn) and bool(secrets_in(dsn))


def redact(dsn: str) -> str:
    """``dsn`` for a message: ``scheme://user@host/db``, the password and any ``password=`` value hidden."""
    scheme, sep, rest = dsn.partition("://")
    if sep and "@" in rest:
        userinfo, _, host = rest.rpartition("@")
        dsn = f"{scheme}://{userinfo.split(':')[0].split('@')[0]}@{host}"
    return scrub(dsn, dsn, redacted=False)


def scrub(message: str, dsn: str, redacted: bool = True) -> str:
    """``message`` with ``dsn`` written redacted and every password candidate of it hidden."""
    if redacted and dsn:
        message = message.replace(dsn, redact(dsn))
    for secret in secrets_in(dsn):
        message = message.replace(secret, HIDDEN)
    return message
