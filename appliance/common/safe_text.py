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
        if isinstance(item, JSONConstant):
            parent[slot] = item
        elif isinstance(item, str):
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


class JSONConstant(str):
    """Where Python's parser met NaN or Infinity (not JSON): kept as a marker in the parsed value, so a refusal
    can name the field, and a batch can refuse only the records that hold one."""


def find_constant(value: Any) -> tuple[str, JSONConstant] | None:
    """The path (``sessions[0].metrics.x``; ``""`` for the value itself) and the marker of the first
    :class:`JSONConstant` in ``value``, or None; iterative, so no nesting overflows the stack."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, JSONConstant):
            return path, item
        if isinstance(item, dict):
            stack.extend((child, f"{path}.{key}" if path else str(key)) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(item))
    return None


def constant_error(value: Any) -> str | None:
    """What to say about the first NaN or Infinity in ``value`` (None: there is none)."""
    found = find_constant(value)
    if found is None:
        return None
    path, name = found
    return f"{path or 'the body'}: {name} is not a JSON number (NaN and Infinity are not allowed)"


def loads_marking(raw: bytes | str, max_depth: int = MAX_DEPTH) -> tuple[Any, bool]:
    """Like :func:`loads_clean`, with each NaN or Infinity left as a :class:`JSONConstant` for the caller to
    refuse where it is (one record of a batch, say); the flag says whether there is any (no walk otherwise)."""
    marked: list[str] = []

    def mark(name: str) -> JSONConstant:
        marked.append(name)
        return JSONConstant(name)

    return _cleaned(raw, json.loads(raw, parse_constant=mark), max_depth), bool(marked)


def loads_clean(raw: bytes | str, max_depth: int = MAX_DEPTH, *, allow_nan: bool = True) -> Any:
    """``clean_json(json.loads(raw))`` for a request body or a message, without walking every string when
    the text cannot hold anything to clean: JSON can carry a lone surrogate or a control character only as
    an escape, a raw DEL or surrogate bytes (in a ``str``, a raw surrogate). Raises ValueError (UnsafeJSON,
    JSONDecodeError, UnicodeDecodeError) or RecursionError for texts to refuse. ``allow_nan=False`` refuses
    ``NaN`` and ``Infinity`` (Python's extension, not JSON) wherever they appear, naming where."""
    if allow_nan:
        return _cleaned(raw, json.loads(raw), max_depth)
    value, marked = loads_marking(raw, max_depth)
    if marked:
        raise UnsafeJSON(constant_error(value) or "NaN and Infinity are not JSON numbers")
    return value


def _cleaned(raw: bytes | str, value: Any, max_depth: int) -> Any:
    if _plainly_clean(raw):
        if type(value) in (dict, list) and _too_deep(value, max_depth):
            raise UnsafeJSON(f"nested deeper than {max_depth} levels")
        return value
    return clean_json(value, max_depth)
