"""Pieces both sides use: clocks, backoff, logging, TLS, small HTTP helpers, the call's stage timeline."""
