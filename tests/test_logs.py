"""Secrets never reach a log line; state changes carry journal fields."""

from __future__ import annotations

import logging

from appliance.common.logs import RedactingFilter, redact


def test_redact_tokens_keys_and_bearer_values() -> None:
    text = redact("token ek_9f8e7d6c5b4a key sk-proj-ABCDEF0123 header Bearer abcdefghijkl.mnop")
    assert "9f8e7d6c5b4a" not in text and "ABCDEF0123" not in text and "abcdefghijkl" not in text
    assert text.count("…redacted") == 3


def test_filter_cleans_formatted_messages_and_keeps_extras() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("stella.test.redact")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.info("got %s for %s", "ek_0123456789abcdef", "lesson", extra={"STATE": "connecting"})
    assert records[0].getMessage() == "got ek_…redacted for lesson"
    assert records[0].STATE == "connecting"  # a journal field under systemd
    logger.removeHandler(handler)
