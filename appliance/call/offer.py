"""The call's one HTTP exchange: POST the SDP offer to the Realtime API, read the answer and call id.

Why its own module: every way the Realtime API can refuse a call (a bad token, a quota, an outage,
an answer that is not SDP, a TLS or network failure) shows up here, and each must become a
CallError that says whether pressing again may help, with the server's own words when it gave any.
"""

from __future__ import annotations

import contextlib

import httpx

from appliance.common.tls import describe_tls_error, shared_ssl_context

CALLS_PATH = "/v1/realtime/calls"


class CallError(Exception):
    """The call could not be opened or broke; ``retryable`` tells whether pressing again may help."""

    def __init__(self, message: str, code: str = "call_failed", retryable: bool = True,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retryable = retryable
        self.status = status


async def post_offer(url: str, token: str, sdp: str, timeout_s: float) -> tuple[str, str | None]:
    """The answer SDP and the call id (from ``Location``) for ``sdp`` POSTed to ``url``; CallError else."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
    try:
        async with httpx.AsyncClient(timeout=timeout_s, verify=shared_ssl_context()) as client:
            response = await client.post(url, content=sdp.encode(), headers=headers)
    except httpx.TimeoutException:
        raise CallError(f"no answer from {url} (timeout)", code="http_timeout") from None
    except httpx.HTTPError as exc:
        words = describe_tls_error(exc, httpx.URL(url).host, ca_setting=None) or str(exc)
        raise CallError(f"cannot reach {url}: {words}", code="network") from None
    if response.status_code != 201:
        raise http_error(response)
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith("application/sdp") or "v=0" not in response.text:
        kind = content_type or "no type"
        raise CallError(f"the Realtime server answered 201 but not with SDP ({kind})",
                        code="bad_answer", retryable=False)
    location = response.headers.get("location", "")
    return response.text, location.rstrip("/").rsplit("/", 1)[-1] or None


def http_error(response: httpx.Response) -> CallError:
    """Turn an error answer into a CallError with the server's own message when it gave one."""
    status = response.status_code
    code, message = f"http_{status}", response.reason_phrase
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        error = response.json()["error"]
        code = str(error.get("code") or error.get("type") or code)
        message = str(error.get("message") or message)
    retryable = status >= 500 or status in (408, 429)
    if status == 401:
        message = f"the Realtime server refused the token ({message})"
    return CallError(f"Realtime call refused: HTTP {status} {code}: {message}", code=code,
                     retryable=retryable, status=status)
