"""Actor keys as strings: the REST ``key`` form and the gateway's ``rvt-key``.

A key is a list of string parts. The REST form (``serializeActorKey`` in the
JS sources) joins the parts with ``/`` and escapes inside each part ``\\`` as
``\\\\`` and ``/`` as ``\\/``; an empty part is ``\\0`` and the empty key is
``/``. The gateway's query form is much cruder: the JS client sends
``parts.join(",")`` unescaped, and leaves ``rvt-key`` out for the empty key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

__all__ = ["EMPTY_KEY", "deserialize_key", "parse_query_key", "serialize_key"]

EMPTY_KEY: Final = "/"
"""The string form of the empty key ``[]``."""

_SEPARATOR: Final = "/"
_ESCAPE: Final = "\\"
_EMPTY_PART: Final = "\\0"


def serialize_key(parts: Sequence[str]) -> str:
    """The REST string form of a key: ``["k1", "a/b"]`` -> ``k1/a\\/b``."""
    if not parts:
        return EMPTY_KEY
    escaped = [_EMPTY_PART if part == "" else part.replace(_ESCAPE, _ESCAPE * 2).replace("/", "\\/") for part in parts]
    return _SEPARATOR.join(escaped)


def deserialize_key(value: str) -> list[str]:
    """Parse the REST string form of a key, exactly as ``deserializeActorKey`` does.

    Quirks kept for compatibility: ``""`` is ``[]`` like ``"/"``; a trailing
    lone ``\\`` stays a literal backslash; ``\\0`` marks the part as empty and
    anything else in that part is dropped.
    """
    if value == EMPTY_KEY:
        return []
    parts: list[str] = []
    current: list[str] = []
    escaping = False
    empty_marker = False
    for char in value:
        if escaping:
            if char == "0":
                empty_marker = True
            else:
                current.append(char)
            escaping = False
        elif char == _ESCAPE:
            escaping = True
        elif char == _SEPARATOR:
            parts.append("" if empty_marker else "".join(current))
            current = []
            empty_marker = False
        else:
            current.append(char)
    if escaping:
        parts.append("".join(current) + _ESCAPE)
    elif empty_marker:
        parts.append("")
    elif current or parts:
        parts.append("".join(current))
    return parts


def parse_query_key(value: str | None) -> list[str]:
    """Parse the gateway's ``rvt-key`` (already URL-decoded): parts split on ``,``.

    Missing or empty means the empty key. The JS client joins parts with
    ``,`` without escaping, so a part that contains ``,`` cannot be told apart
    from two parts, and ``[""]`` arrives as ``[]``.
    """
    if not value:
        return []
    return value.split(",")
