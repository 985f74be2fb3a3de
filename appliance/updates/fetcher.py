"""TUF's downloads over the kiosk's own HTTP client: its device key, its TLS trust, bounded time.

Why not TUF's default fetcher: the companion is reached with the kiosk's CA bundle and device key
like every other companion call, and a server that drips bytes must not hold an update check for
ever, so besides each read's timeout the whole download has a deadline.
"""

from __future__ import annotations

import contextlib
import ssl
import tempfile
import time
from collections.abc import Iterator
from typing import IO

import httpx
from tuf.api.exceptions import DownloadError, DownloadHTTPError, DownloadLengthMismatchError
from tuf.ngclient import FetcherInterface


class CompanionFetcher(FetcherInterface):
    def __init__(self, device_key: str, ssl_context: ssl.SSLContext | None = None, timeout_s: float = 10.0,
                 deadline_s: float = 600.0) -> None:
        self.deadline_s = deadline_s
        self._client = httpx.Client(timeout=timeout_s, verify=ssl_context or True,
                                    headers={"Authorization": f"Bearer {device_key}"})

    def close(self) -> None:
        self._client.close()

    @contextlib.contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        """As TUF's own, but the connection is closed the moment the bound is passed: a server that
        streams for ever is cut off there, not when the iterator is eventually collected."""
        received = 0
        with tempfile.TemporaryFile() as temp_file, contextlib.closing(self.fetch(url)) as chunks:  # type: ignore[type-var]
            for chunk in chunks:
                received += len(chunk)
                if received > max_length:
                    raise DownloadLengthMismatchError(
                        f"Downloaded {received} bytes exceeding the maximum allowed length of {max_length}")
                temp_file.write(chunk)
            temp_file.seek(0)
            yield temp_file

    def _fetch(self, url: str) -> Iterator[bytes]:
        request = self._client.build_request("GET", url)
        try:
            response = self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise DownloadError(f"{url}: {type(exc).__name__}") from None
        if response.status_code != 200:
            response.close()
            raise DownloadHTTPError(f"{url} answered {response.status_code}", response.status_code)
        return self._chunks(url, response)

    def _chunks(self, url: str, response: httpx.Response) -> Iterator[bytes]:
        give_up = time.monotonic() + self.deadline_s
        try:
            for chunk in response.iter_bytes():  # as it arrives: a chunk size would wait for it to fill
                yield chunk
                if time.monotonic() > give_up:
                    raise DownloadError(f"{url} took longer than {self.deadline_s:.0f} s")
        except httpx.HTTPError as exc:
            raise DownloadError(f"{url}: {type(exc).__name__}") from None
        finally:
            response.close()
