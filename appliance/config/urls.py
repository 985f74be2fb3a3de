"""The rules for a base URL the kiosk calls (companion, Realtime API), and hiding credentials in one.

Why its own module: the same rules guard the config file and the companion client at run time, and
``redact_url`` is what every log line and error message uses to show a URL.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from appliance.config.errors import ConfigError, show_value


def check_url(source: str, key: str, url: str, allow_insecure_http: bool = False) -> None:
    """Refuse a base URL the kiosk must not use; raise ConfigError only, whatever the text.

    Why each rule: credentials in a URL end up in logs and error messages (the kiosk authenticates
    with its device key or token instead); plain http:// to another machine exposes the device key,
    tokens and transcripts on the school network. Messages never repeat what stands before an '@'.
    """
    section = key.split(".")[0]
    shown = show_value(redact_url(url))
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ConfigError(source, key, f"{shown} contains spaces or control characters")
    try:
        parsed = urlsplit(url)
        host = parsed.hostname
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number 0-65535
    except ValueError:
        raise ConfigError(source, key, f"{shown} is not a valid URL such as https://host.example.org") from None
    if "@" in parsed.netloc or "@" in url.split("?")[0].split("#")[0]:
        raise ConfigError(source, key, f"{shown} must not contain a user name or password (user:password@): "
                          "remove it; the kiosk authenticates with its device key")
    if parsed.scheme not in ("http", "https") or not host:
        raise ConfigError(source, key, f"{shown} is not an http(s) URL such as https://host.example.org")
    if parsed.query or parsed.fragment:
        raise ConfigError(source, key, f"{shown} must be a base URL without ?query or #fragment")
    if parsed.scheme == "http" and not allow_insecure_http and not is_loopback_host(host):
        raise ConfigError(source, key, f"{shown} uses plain http:// to another machine: use https:// "
                          f"(or set {section}.allow_insecure_http = true on a closed network)")


def is_loopback_host(host: str) -> bool:
    """True for this machine's own addresses: 127.0.0.0/8, ::1 (also IPv4-mapped) and localhost."""
    host = host.rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def redact_url(url: str) -> str:
    """The URL with everything between the scheme and the last '@' hidden (user, password)."""
    at = url.rfind("@")
    if at < 0:
        return url
    # Only a real scheme (RFC 3986: a letter, then letters, digits, '+', '-', '.') is kept: a '://' inside
    # a password of a scheme-less URL must not be taken for the scheme's end.
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme and scheme.end() <= at else 0
    return url[:start] + "***@" + url[at + 1:]
