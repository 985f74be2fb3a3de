"""Make text from the network safe for disk and logs.

A JSON message can carry lone surrogates (``"\\ud800"``) that no UTF-8 writer accepts, control
characters that garble a log line, and nesting deep enough to exhaust Python's recursion limit in
any later recursive walk (``json.dumps`` when the record is saved). Everything that arrives from the
network passes through :func:`clean_json` once, at the edge, so the rest of the kiosk never meets it.
"""

from __future__ import annotations

import re
from typing import Any

MAX_DEPTH = 32
"""Deeper JSON is refused: no Realtime event or companion answer nests beyond a handful of levels."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class UnsafeJSON(ValueError):
    """The value nests too deeply (or is otherwise unfit) to be handled safely."""


def clean_text(text: str) -> str:
    """Lone surrogates become U+FFFD; control characters other than tab and newline are removed."""
    if text.isascii() and text.isprintable():
        return text  # the common case, cheaply
    text = _SURROGATE.sub("\ufffd", text)
    return _CONTROL.sub("", text)


def clean_json(value: Any, max_depth: int = MAX_DEPTH) -> Any:
    """A copy of a parsed JSON value with every string (keys too) cleaned; raises UnsafeJSON when it
    nests deeper than ``max_depth``. Iterative, so no input can overflow the stack."""
    root: list[Any] = [None]
    # Each work item: (source value, container to fill, key or index in it, depth).
    stack: list[tuple[Any, Any, Any, int]] = [(value, root, 0, 0)]
    while stack:
        item, parent, slot, depth = stack.pop()
        if depth > max_depth:
            raise UnsafeJSON(f"nested deeper than {max_depth} levels")
        if isinstance(item, str):
            parent[slot] = clean_text(item)
        elif isinstance(item, dict):
            copy: dict[str, Any] = {}
            parent[slot] = copy
            for key, child in item.items():
                clean_key = clean_text(key) if isinstance(key, str) else str(key)
                copy[clean_key] = None
                stack.append((child, copy, clean_key, depth + 1))
        elif isinstance(item, list):
            items: list[Any] = [None] * len(item)
            parent[slot] = items
            for index, child in enumerate(item):
                stack.append((child, items, index, depth + 1))
        else:
            parent[slot] = item
    return root[0]
