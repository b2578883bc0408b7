"""The queue record of a simple call: one flat tuple, written here, read by its indices.

A simple call (see ``_blueprint.events.simple_room``) waits in the worker's queue as
``(seq, (), *fields)``, where ``fields`` is what ``fields`` below returns: the rule's key,
the profile's identifiers, the time, the unique id, the consent, the value, the currency,
then the read properties as key, value pairs. The full route (``events.pack``) and its
first step, the caller's fast lane (``quick.quick_track``), both write it with ``fields``;
the worker (``_delivery/worker``, ``_delivery/jobs.encode_queued``) reads it through the
``ITEM_*`` indices.

Why a flat tuple of strings and numbers: CPython's collector stops visiting a tuple once
everything in it is untracked, but it looks at a tuple before what the tuple holds, so a
nested tuple is let go one level per pass (and a dict never); a flat one is let go at the
first pass, before it can be promoted to the generation whose passes stall every thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal

__all__ = [
    "ITEM_CONSENT",
    "ITEM_CURRENCY",
    "ITEM_IDENTITY",
    "ITEM_PAIRS",
    "ITEM_RULE",
    "ITEM_TIME",
    "ITEM_UNIQUE_ID",
    "ITEM_VALUE",
    "MESSAGE_ID",
    "IdentityKey",
    "Packed",
    "fields",
]

IdentityKey = tuple[str | None, str | None, str | None, str | None]
"""A profile's identifiers as a tuple: email, phone_number, external_id, anonymous_id."""

Packed = tuple[tuple[object, ...], int]
"""A simple call ready to queue: its fields and what they count against
``max_queue_bytes`` (``_klaviyo.json.estimate``)."""


def fields(  # noqa: PLR0917 - positional: the caller's hot path writes it
    rule: tuple[str, str],
    identity: IdentityKey,
    time: datetime | int,
    unique_id: str,
    consent: Mapping[str, bool] | None,
    value: int | float | Decimal | None,
    currency: str | None,
    pairs: Sequence[object],
) -> tuple[object, ...]:
    """Return a simple call's fields, flat: the one writer of the record's layout.

    Args:
        rule: The rule's key (kind, event name).
        identity: The profile's identifiers.
        time: When it happened; an int is ``time.time_ns()``.
        unique_id: The event's unique_id (the call's message id).
        consent: The call's consent state, None when it carries none.
        value: What feeds Klaviyo's ``value``.
        currency: What feeds ``value_currency``.
        pairs: The read properties as key, value, key, value...
    """
    return (*rule, *identity, time, unique_id, consent, value, currency, *pairs)


_OFFSET = 2  # the worker's item is (seq, (), *fields)
MESSAGE_ID = 7
"""Where the message id (the unique_id) is in ``fields``."""
ITEM_RULE = slice(_OFFSET, _OFFSET + 2)
ITEM_IDENTITY = slice(_OFFSET + 2, _OFFSET + 6)
ITEM_TIME = _OFFSET + 6
ITEM_UNIQUE_ID = _OFFSET + MESSAGE_ID
ITEM_CONSENT = _OFFSET + 8
ITEM_VALUE = _OFFSET + 9
ITEM_CURRENCY = _OFFSET + 10
ITEM_PAIRS = _OFFSET + 11
