"""A gzip bomb and a client that sends it: what one hostile laptop on a school network can do to the companion.

Shared by the companion's edge tests and scripts/bench_companion_bomb.py. The sender is a plain blocking
socket on its own thread, so the bomb is pushed as fast as the companion takes it, whatever the caller's
event loop is doing.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import threading
import time
import zlib
from urllib.parse import urlsplit

MB = 1024 * 1024


@functools.lru_cache(maxsize=4)
def gzip_bomb(inflated_mb: int) -> bytes:
    """A gzip stream of ``inflated_mb`` MB of zeros, about 1 KB on the wire per inflated MB.

    Built in milliseconds whatever the size: each megabyte is compressed once and ends in a full flush, so
    its bytes stand alone and repeat. The trailer's checksum is not computed (zeros): a server inflates
    the whole stream before it could notice, which is the harm being measured."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MB)
    first = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    again = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    end = packer.flush(zlib.Z_FINISH)
    return first + again * (inflated_mb - 1) + end[:-8] + bytes(4) + (inflated_mb * MB % 2**32).to_bytes(4, "little")


class BombSender(threading.Thread):
    """POSTs ``body`` to ``url`` (``Content-Encoding: gzip`` unless ``encoding`` is empty) on a raw socket.

    ``started`` is set once the headers and the first chunk are on the wire, ``done`` when the companion is
    through with the connection (closed it, or answered a second request sent after the body);
    ``status`` is the first answer's status code (0: closed without one)."""

    def __init__(self, url: str, path: str, body: bytes, encoding: str = "gzip", chunk: int = 64 * 1024,
                 chunked: bool = False) -> None:
        super().__init__(daemon=True)
        self.address = (urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or 80)
        self.path, self.body, self.encoding, self.chunk, self.chunked = path, body, encoding, chunk, chunked
        self.started = threading.Event()
        self.done = threading.Event()
        self.status = 0
        self.sent = 0
        self.busy_s = 0.0
        """From the first byte sent until the companion was through with the connection."""

    def run(self) -> None:
        begun = time.perf_counter()
        try:
            with socket.create_connection(self.address, timeout=60) as sock:
                encoding = f"Content-Encoding: {self.encoding}\r\n" if self.encoding else ""
                length = "Transfer-Encoding: chunked" if self.chunked else f"Content-Length: {len(self.body)}"
                sock.sendall((f"POST {self.path} HTTP/1.1\r\nHost: {self.address[0]}\r\n"
                              f"Content-Type: application/json\r\n{encoding}{length}\r\n\r\n").encode())
                try:
                    for start in range(0, len(self.body), self.chunk):
                        piece = self.body[start:start + self.chunk]
                        sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if self.chunked else piece)
                        self.sent += min(self.chunk, len(self.body) - start)
                        self.started.set()
                    if self.chunked:
                        sock.sendall(b"0\r\n\r\n")
                except OSError:
                    pass  # the companion closed the connection on us: what it should do
                self.started.set()
                with contextlib.suppress(OSError):
                    # A second request on the same connection: answered only once the companion has read
                    # (and inflated) the whole first body, so its answer or the connection's end is the
                    # moment the companion is done with the bomb.
                    sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = b""
                try:
                    while chunk := sock.recv(65536):
                        answer += chunk
                except OSError:
                    pass
                if answer.startswith(b"HTTP/1.1 "):
                    self.status = int(answer[9:12])
        finally:
            self.busy_s = time.perf_counter() - begun
            self.started.set()
            self.done.set()
