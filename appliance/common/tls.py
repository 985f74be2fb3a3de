"""Which certificates the kiosk trusts, and TLS failures said in words an admin can act on.

Why the OS store and not certifi's bundle (httpx's default): a school that runs its companion with a
certificate from its own CA installs that CA once in the OS store (``update-ca-certificates``) and
every program trusts it; a private bundle inside the venv would silently ignore it. The standard
library's ``ssl.create_default_context()`` already loads the OS store through OpenSSL's default
verify paths (on Raspberry Pi OS / Debian: /etc/ssl/certs). The ``truststore`` package adds nothing
on Linux (it reads the same files) and would be one more dependency. ``companion.ca_file`` adds a
PEM file on top, for a kiosk whose OS store the admin does not want to touch.
"""

from __future__ import annotations

import functools
import os
import ssl
from pathlib import Path

# OpenSSL X509_V_ERR_* codes (ssl.SSLCertVerificationError.verify_code).
_UNKNOWN_CA = {2, 18, 19, 20, 21}  # no issuer, self-signed leaf, self-signed in chain, no local issuer
_EXPIRED = 10
_NOT_YET_VALID = 9
_WRONG_NAME = {62, 64}  # hostname mismatch, IP address mismatch


def ssl_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """A verifying client context: the OS trust store, plus ``ca_file`` when given.

    Raises OSError (missing/unreadable file) or ssl.SSLError (not PEM certificates) for a bad
    ``ca_file``; the start-up checks (appliance.daemon.preflight) turn those into one config line.
    """
    context = ssl.create_default_context()
    paths = ssl.get_default_verify_paths()
    if not _has_certificates(paths.cafile, paths.capath):
        # A system without the ca-certificates package: fall back to certifi (httpx depends on it)
        # rather than trusting nothing at all.
        import certifi

        context.load_verify_locations(cafile=certifi.where())
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """The OS-store context (no extra CA), built once per process and shared by every connection.

    Why cached: loading the OS store costs 40–120 ms of CPU on a 2-core x86 VM (measured; more on a
    Pi), and the Realtime call used to pay it on every button press, before its offer could be
    POSTed. An SSLContext is safe to share between connections, threads and event loops.
    """
    return ssl_context()


def companion_ssl_context(config: object) -> ssl.SSLContext:
    """The context for talking to the companion of ``config`` (a Config): OS store + companion.ca_file."""
    from appliance.config import Config

    assert isinstance(config, Config)
    return ssl_context(config.companion.ca_file)


def _has_certificates(cafile: str | None, capath: str | None) -> bool:
    if cafile and os.path.isfile(cafile):
        return True
    return bool(capath and os.path.isdir(capath) and any(os.scandir(capath)))


def find_tls_error(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error behind an httpx/httpcore/aiohttp exception (walks __cause__ and __context__)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return current
        pending += [current.__cause__, current.__context__]
        pending += [arg for arg in current.args if isinstance(arg, BaseException)]
    return None


def describe_tls_error(exc: BaseException, host: str = "",
                       ca_setting: str | None = "companion.ca_file") -> str | None:
    """What went wrong with a server's certificate, in words; None when ``exc`` is not a TLS failure.

    ``ca_setting`` names the config key that adds a trusted CA for this server (None: there is none).
    """
    error = find_tls_error(exc)
    if error is None:
        return None
    server = f"{host}'s" if host else "the server's"
    if isinstance(error, ssl.SSLCertVerificationError):
        code = error.verify_code
        if code == _EXPIRED:
            return (f"{server} certificate has expired: renew it on the server "
                    "(or this kiosk's clock is wrong: check `timedatectl`)")
        if code == _NOT_YET_VALID:
            return (f"{server} certificate is not valid yet: this kiosk's clock is probably behind "
                    "(wait for network time, check `timedatectl`)")
        if code in _WRONG_NAME:
            return (f"{server} certificate has the wrong name: it was not issued for {host or 'this address'}; "
                    "use the name on the certificate in the URL, or reissue it")
        if code in _UNKNOWN_CA:
            return (f"{server} certificate is from an unknown CA (self-signed or not trusted here): install "
                    "the school's CA in the OS store (update-ca-certificates)"
                    + (f" or set {ca_setting}" if ca_setting else ""))
        reason = error.verify_message or error.reason or str(error)
        return f"{server} certificate was rejected: {reason}"
    reason = error.reason or str(error)
    return f"TLS handshake with {host or 'the server'} failed ({reason}): is it really https on that port?"
