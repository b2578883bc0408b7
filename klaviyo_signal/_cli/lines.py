"""Segment-style messages in JSON Lines, as ``klaviyo-signal send --file`` reads them.

One JSON object per line: ``{"type": "track", "event": ..., "userId": ..., ...}``. Checking
the shape here leaves the values to the Client, which validates them as for any call.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import IO, Any

import attrs

from .._explain import CALL_KEYWORDS

__all__ = ["BadLine", "InputFile", "lines", "parse_line", "scan"]

_ALIASES = {
    "userId": "user_id",
    "anonymousId": "anonymous_id",
    "messageId": "message_id",
    "listId": "list_id",
    "customSource": "custom_source",
    "consentedAt": "consented_at",
}
# A line takes what its call takes (subscribe and unsubscribe, and explicit consent, are
# the Client's, not Segment's), but for backfill: the run's --backfill decides for every
# line, and a line's own key is ignored like any other a call does not use.
_FIELDS = {kind: names - {"backfill"} for kind, names in CALL_KEYWORDS.items()}
_KNOWN = {field for fields in _FIELDS.values() for field in fields}
_TYPES = "'track', 'identify', 'page', 'subscribe' or 'unsubscribe'"
_READ = 1 << 20


class BadLine(ValueError):
    """A line is not a message this command can send."""


def parse_line(text: str) -> tuple[str, dict[str, Any]]:
    """Read one Segment-style message: return the call name and its keyword arguments.

    Keys may be camelCase (``userId``) or snake_case (``user_id``); keys the call does not
    use, such as Segment's ``sentAt`` or ``integrations``, are ignored.

    Raises:
        BadLine: Not JSON, not an object, an unknown ``type``, or a key the type cannot take.
    """
    message = read_object(text)
    kind = message.get("type")
    if kind not in _FIELDS:
        raise BadLine(f"'type' must be {_TYPES}, got {kind!r}")
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


def read_object(text: str) -> dict[str, Any]:
    """Parse one line as a JSON object, numbers with a point as Decimal (money stays exact).

    Raises:
        BadLine: Not JSON, or not an object.
    """
    try:
        message = json.loads(text, parse_float=Decimal)
    except ValueError as exc:
        raise BadLine(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise BadLine(f"expected a JSON object, got {type(message).__name__}")
    return message


def lines(stream: IO[bytes]) -> Iterator[tuple[int, str | None, bytes]]:
    """Yield (line number, text, raw bytes) for each non-blank line; text None when it is
    not UTF-8. Numbers count every line, blank ones too, as an editor does."""
    for number, raw in enumerate(stream, 1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            yield number, None, raw
            continue
        if text.strip():
            yield number, text, raw


@attrs.frozen
class InputFile:
    """What identifies an input file's content: its size and SHA-256, and its message lines.

    Attributes:
        path: The path it was read from.
        size: Its length in bytes.
        sha256: The hex digest of its bytes.
        messages: How many lines are not blank.
    """

    path: str
    size: int
    sha256: str
    messages: int

    def message_id(self, number: int) -> str:
        """The id of line ``number`` when it carries no ``messageId``: the same in every
        run over these bytes, and different for any other content."""
        return f"{self.sha256[:16]}:{number}"


def scan(path: str) -> InputFile:
    """Read a file once: its fingerprint and how many message lines it holds.

    Raises:
        OSError: It cannot be read.
    """
    digest = hashlib.sha256()
    size = 0
    messages = 0
    with open(path, "rb") as stream:
        for raw in stream:
            digest.update(raw)
            size += len(raw)
            if raw.strip():
                messages += 1
    return InputFile(path, size, digest.hexdigest(), messages)
