"""Make text from the network safe for disk and logs.

A JSON message can carry lone surrogates (``"\\ud800"``) that no UTF-8 writer accepts, control
characters that garble a log line, and nesting deep enough to exhaust Python's recursion limit in
any later recursive walk (``json.dumps`` when the record is saved). Everything that arrives from the
network passes through :func:`clean_json` once, at the edge, so the rest of the kiosk never meets it.
"""

from __future__ import annotations

import json
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


#: What may spell a surrogate or control character: \\uD800-\\uDFFF, \\u0000-\\u001F and \\u007F escapes, \\b
#: and \\f, a raw DEL, a NUL (UTF-16/32 text), UTF-8 bytes of a surrogate (json.loads decodes bytes with
#: surrogatepass). Other escapes (accented letters from an ASCII-only encoder) need no cleaning.
_MAY_NEED_CLEANING = re.compile(rb"\\u(?:[dD][89a-fA-F]|00[01]|007[fF])|\\b|\\f|\x7f|\x00|\xed[\xa0-\xbf]")


_MAY_NEED_CLEANING_TEXT = re.compile(r"\\u(?:[dD][89a-fA-F]|00[01]|007[fF])|\\b|\\f|[\x7f\x00\ud800-\udfff]")
"""The same for a decoded ``str`` (a data-channel text message): a raw surrogate instead of its UTF-8 bytes."""


def _plainly_clean(raw: bytes | str) -> bool:
    """Whether ``raw`` cannot hold anything to clean. First the cheap, common answer (ASCII text with no
    escape, DEL or NUL: checks that run in C at memory speed); the patterns only for the rest."""
    if isinstance(raw, bytes):
        if raw.isascii() and b"\\" not in raw and b"\x7f" not in raw and b"\x00" not in raw:
            return True
        return _MAY_NEED_CLEANING.search(raw) is None  # no NUL byte also means UTF-8, not UTF-16/32
    if raw.isascii() and "\\" not in raw and "\x7f" not in raw and "\x00" not in raw:
        return True
    return _MAY_NEED_CLEANING_TEXT.search(raw) is None


def _too_deep(value: Any, max_depth: int) -> bool:
    """Whether :func:`clean_json` would refuse ``value`` for its nesting; visits containers only."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth or (depth == max_depth and item):  # a child would sit below max_depth
            return True
        for child in item.values() if type(item) is dict else item:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return False


class _Constant(str):
    """Where Python's parser met NaN or Infinity: kept as a marker so the refusal can name its field."""


def _constant_path(value: Any) -> str:
    """The path (``sessions[0].metrics.x``) of the first NaN/Infinity marker in ``value``; iterative."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, _Constant):
            return path or "the body"
        if isinstance(item, dict):
            stack.extend((child, f"{path}.{key}" if path else str(key)) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(item))
    return "the body"


def _loads_without_constants(raw: bytes | str) -> Any:
    found: list[str] = []

    def mark(name: str) -> _Constant:
        found.append(name)
        return _Constant(name)

    value = json.loads(raw, parse_constant=mark)
    if found:
        raise UnsafeJSON(f"{_constant_path(value)}: {found[0]} is not a JSON number (NaN and Infinity are "
                         "not allowed)")
    return value


def loads_clean(raw: bytes | str, max_depth: int = MAX_DEPTH, *, allow_nan: bool = True) -> Any:
    """``clean_json(json.loads(raw))`` for a request body or a message, without walking every string when
    the text cannot hold anything to clean: JSON can carry a lone surrogate or a control character only as
    an escape, a raw DEL or surrogate bytes (in a ``str``, a raw surrogate). Raises ValueError (UnsafeJSON,
    JSONDecodeError, UnicodeDecodeError) or RecursionError for texts to refuse. ``allow_nan=False`` refuses
    ``NaN`` and ``Infinity`` (Python's extension, not JSON) wherever they appear."""
    value = json.loads(raw) if allow_nan else _loads_without_constants(raw)
    if _plainly_clean(raw):
        if type(value) in (dict, list) and _too_deep(value, max_depth):
            raise UnsafeJSON(f"nested deeper than {max_depth} levels")
        return value
    return clean_json(value, max_depth)
