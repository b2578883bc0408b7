"""Segment-style messages in JSON Lines, as ``klaviyo-signal send --file`` reads them.

One JSON object per line: ``{"type": "track", "event": ..., "userId": ..., ...}``. Checking
the shape here leaves the values to the Client, which validates them as for any call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import IO, Any

__all__ = ["BadLine", "lines", "parse_line"]

_ALIASES = {
    "userId": "user_id",
    "anonymousId": "anonymous_id",
    "messageId": "message_id",
}
_COMMON = {"user_id", "anonymous_id", "traits", "context", "timestamp", "message_id"}
_FIELDS = {
    "track": _COMMON | {"event", "properties"},
    "page": _COMMON | {"name", "properties"},
    "identify": _COMMON,
}
_KNOWN = {field for fields in _FIELDS.values() for field in fields}


class BadLine(ValueError):
    """A line is not a message this command can send."""


def parse_line(text: str) -> tuple[str, dict[str, Any]]:
    """Read one Segment-style message: return the call name and its keyword arguments.

    Keys may be camelCase (``userId``) or snake_case (``user_id``); keys the call does not
    use, such as Segment's ``sentAt`` or ``integrations``, are ignored.

    Raises:
        BadLine: Not JSON, not an object, an unknown ``type``, or a key the type cannot take.
    """
    try:
        message = json.loads(text, parse_float=Decimal)  # money stays exact
    except ValueError as exc:
        raise BadLine(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise BadLine(f"expected a JSON object, got {type(message).__name__}")
    kind = message.get("type")
    if kind not in _FIELDS:
        raise BadLine(f"'type' must be 'track', 'identify' or 'page', got {kind!r}")
    fields: dict[str, Any] = {}
    for key, value in message.items():
        name = _ALIASES.get(key, key)
        if name not in _KNOWN or value is None:
            continue
        if name not in _FIELDS[kind]:
            raise BadLine(f"{kind} messages take no {key!r}")
        if name in fields:
            raise BadLine(f"{key!r} repeats another spelling of the same key")
        fields[name] = value
    return kind, fields


def lines(stream: IO[bytes]) -> Iterator[tuple[int, str | None]]:
    """Yield (line number, text) for each non-blank line; text None when it is not UTF-8."""
    for number, raw in enumerate(stream, 1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            yield number, None
            continue
        if text.strip():
            yield number, text
