"""Dotted paths such as ``context.page.url``: how a blueprint names a value in a call.

A path starts at one of the call's parts (``properties``, ``context``, ``traits``...) and
walks into objects key by key. Paths are checked when a blueprint is built, so a typo in a
root fails at load time, not on a worker thread.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import attrs

from .._calls.message import Message
from .._klaviyo.json import JSON

__all__ = [
    "ITEM_ROOTS",
    "MISSING",
    "ROOTS",
    "Found",
    "check_path",
    "lookup",
    "message_view",
    "split_path",
]

# The parts of a call a path may start from; ``item`` only inside a line-item rule.
ROOTS = (
    "properties",
    "context",
    "traits",
    "event",
    "name",
    "user_id",
    "anonymous_id",
    "message_id",
    "timestamp",
    "consent",
)
ITEM_ROOTS = (*ROOTS, "item")


class _Missing:
    """The marker for a path that leads nowhere (distinct from a JSON null)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


@attrs.frozen
class Found:
    """What a path led to: a value, or MISSING with the step that was not an object."""

    value: JSON | _Missing
    blocked_at: str | None = None
    """The longest prefix of the path whose value is not an object, if that stopped it."""
    blocker: JSON = None


def check_path(value: object, roots: tuple[str, ...] = ROOTS) -> str | None:
    """Return why ``value`` is not a dotted path starting at one of ``roots``, or None."""
    if not isinstance(value, str):
        return f"expected a dotted path, got {value!r}"
    parts = value.split(".")
    if not all(parts):
        return f"expected a dotted path such as 'properties.revenue', got {value!r}"
    if parts[0] not in roots:
        return f"{value!r} must start with one of {', '.join(roots)}"
    return None


def message_view(message: Message, *, timestamp: bool = True) -> dict[str, JSON]:
    """Return the call as the JSON object that paths walk into.

    The parts are the message's own (already cleaned) mappings, not copies: this runs on
    the caller's thread for every call, and nothing writes through a view.
    ``timestamp=False`` leaves out the ISO string of the time, for rules whose paths do
    not read it (writing it costs more than the rest of the view).
    """
    view: dict[str, JSON] = {
        "properties": message.properties,  # type: ignore[dict-item]
        "context": message.context,  # type: ignore[dict-item]
        "traits": message.traits,  # type: ignore[dict-item]
        "event": message.event,
        "name": message.name,
        "user_id": message.user_id,
        "anonymous_id": message.anonymous_id,
        "message_id": message.message_id,
        "consent": message.consent,  # type: ignore[dict-item]
    }
    if timestamp:
        view["timestamp"] = message.timestamp.isoformat()
    return view


@functools.lru_cache(maxsize=4096)
def split_path(path: str) -> tuple[str, ...]:
    """Return a dotted path's keys; paths come from blueprints, so each is split once."""
    return tuple(path.split("."))


_ABSENT = Found(MISSING)


def lookup(view: Mapping[str, JSON], path: str) -> Found:
    """Follow ``path`` through ``view``; a missing key or a non-object step gives MISSING."""
    current: object = view
    parts = split_path(path)
    for index, part in enumerate(parts):
        if type(current) is not dict and not isinstance(current, Mapping):
            return Found(MISSING, ".".join(parts[:index]), current)  # type: ignore[arg-type]
        if part not in current:
            return _ABSENT
        current = current[part]
    return Found(current)  # type: ignore[arg-type]
