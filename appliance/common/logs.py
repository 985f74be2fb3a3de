"""Logging set-up: the journal under systemd, stderr otherwise; secrets never reach a log line."""

from __future__ import annotations

import logging
import os
import re
import sys

_SECRET = re.compile(r"\b(ek_|sk-)[A-Za-z0-9_\-]{4,}|(Bearer\s+)[A-Za-z0-9_\-.]{4,}")


def redact(text: str) -> str:
    """Replace ephemeral tokens, API keys and bearer values with a marker."""
    return _SECRET.sub(lambda m: (m.group(1) or m.group(2)) + "…redacted", text)


class RedactingFilter(logging.Filter):
    """Applied to every record, so no code path can log a token by accident."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def setup_logging(level: str = "info") -> None:
    """Journal with structured fields when started by systemd, plain stderr lines otherwise."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER="stella-kiosk")
        except ImportError:
            handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiortc/aioice are chatty at INFO; their warnings still show.
    for noisy in ("aioice", "aiortc", "httpx", "httpcore", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
