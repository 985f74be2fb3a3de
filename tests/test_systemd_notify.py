"""The notify protocol through both senders: libsystemd (systemd-python) and the plain-socket fallback."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.daemon.systemd import Notifier

try:
    from systemd import daemon as _daemon

    HAVE_LIBSYSTEMD = callable(getattr(_daemon, "notify", None))
except ImportError:
    HAVE_LIBSYSTEMD = False

BACKENDS = [
    pytest.param(True, id="libsystemd", marks=pytest.mark.skipif(not HAVE_LIBSYSTEMD,
                                                                 reason="systemd-python not installed")),
    pytest.param(False, id="socket"),
]


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket standing in for the service manager, named by NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_libsystemd_is_used_when_installed() -> None:
    """Guards against the daemon hand-rolling sd_notify on a kiosk that has libsystemd's own."""
    if not HAVE_LIBSYSTEMD:
        pytest.skip("systemd-python not installed")
    assert Notifier().backend == "libsystemd"
    assert Notifier(use_libsystemd=False).backend == "socket"


@pytest.mark.parametrize("use_libsystemd", BACKENDS)
def test_messages_arrive_verbatim(manager: socket.socket, use_libsystemd: bool) -> None:
    notifier = Notifier(use_libsystemd=use_libsystemd)
    assert notifier.enabled
    notifier.ready("idle")
    assert manager.recv(4096) == b"READY=1\nSTATUS=idle"
    notifier.watchdog()
    assert manager.recv(4096) == b"WATCHDOG=1"
    notifier.stopping()
    assert manager.recv(4096) == b"STOPPING=1"


@pytest.mark.parametrize("use_libsystemd", BACKENDS)
def test_abstract_socket_address(monkeypatch: pytest.MonkeyPatch, use_libsystemd: bool) -> None:
    """systemd may name an abstract socket (``@name``); both senders must reach it."""
    name = f"stella-notify-test-{id(monkeypatch)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        Notifier(use_libsystemd=use_libsystemd).status("connecting")
        assert sock.recv(4096) == b"STATUS=connecting"


@pytest.mark.parametrize("use_libsystemd", BACKENDS)
def test_missing_socket_warns_once_and_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture, use_libsystemd: bool) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    notifier = Notifier(use_libsystemd=use_libsystemd)
    with caplog.at_level(logging.WARNING, logger="appliance.daemon.systemd"):
        for _ in range(3):
            notifier.watchdog()
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "cannot notify systemd" in caplog.records[0].getMessage()


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    notifier.ready("idle")  # a no-op, not an error


@pytest.mark.parametrize("use_libsystemd", BACKENDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(status=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\0"), max_size=200))
def test_any_status_text_arrives_as_utf8(manager: socket.socket, use_libsystemd: bool, status: str) -> None:
    Notifier(use_libsystemd=use_libsystemd).status(status)
    assert manager.recv(8192) == f"STATUS={status}".encode()
