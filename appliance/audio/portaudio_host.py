"""The one PortAudio (PyAudio) instance the microphone and the speaker share, re-initialised safely.

Why a shared owner: PortAudio is process-wide. It counts ``Pa_Initialize``/``Pa_Terminate`` calls,
sees devices that appeared or moved (a USB card plugged back into another port) only after a
*full* terminate + initialise, and its final ``Pa_Terminate`` closes every open stream, whichever
PyAudio instance opened it. So a backend that recovers a lost device must not simply terminate
and re-create "its" instance: while the other direction's stream is open that either kills that
stream (the last terminate) or changes nothing (a counted one, device list still stale).

The rules, all under one lock (only worker threads take it, never the event loop):

- backends never terminate PortAudio; they tell the host when their stream opens and closes;
- when no stream is open any more, the host terminates, so the next open re-initialises and sees
  the devices as they are now (a mic and speaker on one USB card fail together: this is the
  common case, and it costs nothing);
- a recovering device that needs a fresh device list while the other direction still runs asks
  for :meth:`reinitialise`: the host closes the other streams, terminates, initialises, and
  reopens them (a gap of a few tens of milliseconds on the working device). The backend does
  this at most every ``rescan_interval_s`` and tries the current list first, because a card
  that comes back in the same port keeps its PortAudio name.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)


class StreamOwner(Protocol):
    """What the host needs from a backend during a coordinated re-initialisation."""

    def _pause_stream(self) -> None: ...

    def _resume_stream(self) -> None: ...


class PortAudioHost:
    def __init__(self, factory: Callable[[], Any]) -> None:
        self.lock = threading.RLock()
        self._factory = factory
        self._pa: Any = None
        self._open: set[StreamOwner] = set()
        self.initialisations = 0

    def pyaudio(self) -> Any:
        """The live instance, initialising PortAudio if needed (call with ``lock`` held)."""
        with self.lock:
            if self._pa is None:
                self._pa = self._factory()
                self.initialisations += 1
            return self._pa

    def opened(self, owner: StreamOwner) -> None:
        with self.lock:
            self._open.add(owner)

    def closed(self, owner: StreamOwner) -> None:
        """``owner`` has no open stream now; PortAudio is terminated once nobody has one."""
        with self.lock:
            self._open.discard(owner)
            if not self._open:
                self._terminate()

    def forget(self, owner: StreamOwner) -> None:
        """``owner`` lost its stream during :meth:`reinitialise` (no terminate: the restart goes on)."""
        with self.lock:
            self._open.discard(owner)

    def others_open(self, owner: StreamOwner) -> bool:
        with self.lock:
            return bool(self._open - {owner})

    def reinitialise(self, requester: StreamOwner) -> None:
        """Fresh device list for ``requester``: pause every other open stream, restart PortAudio, resume them.

        A stream that cannot be reopened stays closed; its own supervisor then reports it and retries.
        """
        with self.lock:
            others = [o for o in self._open if o is not requester]
            for owner in others:
                owner._pause_stream()
            self._open.difference_update(others)
            self._terminate()
            log.info("PortAudio re-initialised to look for devices again (%d stream(s) paused)", len(others))
            for owner in others:
                owner._resume_stream()

    def _terminate(self) -> None:
        if self._pa is not None:
            pa, self._pa = self._pa, None
            try:
                pa.terminate()
            except Exception as exc:  # PortAudio's errors vary; the instance is gone either way
                log.warning("terminating PortAudio: %s", exc)


_HOSTS: weakref.WeakKeyDictionary[Callable[[], Any], PortAudioHost] = weakref.WeakKeyDictionary()
_HOSTS_LOCK = threading.Lock()


def host_for(factory: Callable[[], Any]) -> PortAudioHost:
    """The host shared by every backend built with ``factory`` (the microphone and the speaker)."""
    with _HOSTS_LOCK:
        host = _HOSTS.get(factory)
        if host is None:
            host = _HOSTS[factory] = PortAudioHost(factory)
        return host
