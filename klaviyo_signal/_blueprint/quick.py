"""The caller's fast lane: the first step of a background ``track`` call's route.

Most calls from a web handler look alike: a plain event name, a dict of flat properties,
an email and/or a user id, nothing else, for an event whose rule is simple (see
``_blueprint.events.simple_room``). For those, the rest of the route (``build_message`` ->
``CompiledBlueprint.prepare`` -> ``_blueprint.events.pack``) builds a Message, an
Identity and a view that nobody else ever sees, only to flatten them into the queue
record. This step recognises exactly that shape and writes the same record directly,
with the route's own checks: the plain-value test and its size (``_klaviyo.json.plain_size``),
the money checks (``events.is_amount``, ``events.is_currency``) and the property room
(``events.simple_room``).

It never raises and never decides: on anything it does not recognise, and on every input
the rest of the route would refuse, it returns None and the route goes on, with its
error messages. So the lane can make a call faster, never different
(``tests/blueprint/test_quick.py`` and ``tests/test_differential.py`` compare them).
"""

from __future__ import annotations

from collections.abc import Mapping
from time import time_ns
from types import MappingProxyType

import attrs

from .._calls.identity import plain_email, plain_id
from .._calls.message import new_message_id
from .._klaviyo.json import BYTES_PER_VALUE, plain_size
from .events import is_amount, is_currency
from .reads import Reads
from .record import MESSAGE_ID, Packed, fields
from .rules import Rule

__all__ = ["MESSAGE_ID", "QuickPlan", "quick_plan", "quick_track"]


_NO_PROPERTIES: Mapping[str, object] = MappingProxyType({})


@attrs.frozen
class QuickPlan:
    """What the lane needs of one event's rule, worked out once per event name."""

    key: tuple[str, str]
    """The rule's blueprint key (``CompiledBlueprint.rule_for``)."""
    reads: tuple[str, ...]
    """The property keys the rule reads, in the order the full route copies them."""
    room: int
    """The most properties a call may carry (``events.simple_room``)."""
    value: tuple[str, ...]
    """The property keys that feed ``value``: the first one not null wins."""
    currency: tuple[str, ...]
    """Likewise for ``value_currency``."""
    traits: bool
    """Whether an ``email`` trait still leaves the event's profile bare."""


def quick_plan(
    key: tuple[str, str], rule: Rule, reads: Reads, room: int, *, traits_only: bool
) -> QuickPlan | None:
    """Return the lane's plan for a simple, enabled rule, or None if its calls cannot use it.

    Args:
        key: The rule's blueprint key.
        rule: The rule (simple: ``simple_room`` gave ``room``).
        reads: What the rule reads (``CompiledBlueprint.reads``).
        room: How many of the call's properties its event has room for.
        traits_only: Whether the profile mapping reads only traits (``_blueprint.profile.bare``).
    """
    value = _property_keys(rule.value)
    currency = _property_keys(rule.value_currency)
    read = reads.properties
    if read is None:
        return None
    if (
        value is None
        or currency is None
        or not {*value, *currency} <= {*read}
        or not all(key.isascii() for key in read)  # no lone surrogate to refuse
    ):
        return None
    return QuickPlan(
        key=key,
        reads=read,
        room=room,
        value=value,
        currency=currency,
        traits=traits_only,
    )


def _property_keys(paths: tuple[str, ...]) -> tuple[str, ...] | None:
    """Return the keys of ``properties.<key>`` paths; None if any path reads elsewhere."""
    keys = []
    for path in paths:
        root, _, key = path.partition(".")
        if root != "properties" or not key or "." in key:
            return None
        keys.append(key)
    return tuple(keys)


def quick_track(  # noqa: PLR0917 - positional: the caller's hot path
    plan: QuickPlan,
    properties: Mapping[str, object] | None,
    traits: Mapping[str, object] | None,
    user_id: object,
    anonymous_id: object,
    consent: Mapping[str, bool] | None = None,
) -> Packed | None:
    """Return a common call's queue fields (``_blueprint/record``) and
    the size its properties count against ``max_queue_bytes``; None: use the full route.

    The call has no context, timestamp or message id, and its ``consent`` (if any) is a
    request context's, checked already and not a denial (the Client checked). Its
    time is ``time.time_ns()``: the worker writes it as the ISO string ``datetime.now()``
    would give (``_klaviyo.wire.iso_time``), for less than the cost of making the datetime.
    """
    if properties is None:
        properties = _NO_PROPERTIES
    elif type(properties) is not dict or len(properties) > plan.room:
        return None
    read = _read(plan.reads, properties)
    if read is None:
        return None
    pairs, size = read
    money = _money(plan, properties)
    if money is None:
        return None
    email = None
    if traits is not None:
        if type(traits) is not dict:
            return None  # a list, a str...: the full route says it must be a mapping
        if traits:
            if not plan.traits or len(traits) != 1:
                return None
            email = traits.get("email")
            if not plain_email(email):
                return None
    if (user_id is not None and not plain_id(user_id)) or (
        anonymous_id is not None and not plain_id(anonymous_id)
    ):
        return None
    if email is None and user_id is None and anonymous_id is None:
        return None  # no identifier: the full route refuses it
    record = fields(
        plan.key,
        (email, None, user_id, anonymous_id),
        time_ns(),
        new_message_id(),
        consent,
        *money,
        pairs,
    )
    return record, size


def _read(
    keys: tuple[str, ...], properties: Mapping[str, object]
) -> tuple[list[object], int] | None:
    """Return the read properties as key, value pairs and their size (as
    ``_klaviyo.json.estimate`` counts the mapping), if all are plain values."""
    pairs: list[object] = []
    size = BYTES_PER_VALUE
    for key in keys:
        if key not in properties:
            continue
        item = properties[key]
        counted = plain_size(item)
        if counted < 0:
            return None
        pairs.append(key)
        pairs.append(item)
        size += counted + len(key)
    return pairs, size


_NO_MONEY = (None, None)


def _money(
    plan: QuickPlan, properties: Mapping[str, object]
) -> tuple[int | float | None, str | None] | None:
    """Return the call's value and currency, if both are absent or well formed."""
    if not plan.value and not plan.currency:
        return _NO_MONEY
    value = currency = None
    for key in plan.value:
        value = properties.get(key)
        if value is not None:
            if not is_amount(value):
                return None  # a bool, a str: the full route says what is wrong
            break
    for key in plan.currency:
        currency = properties.get(key)
        if currency is not None:
            if not is_currency(currency):
                return None
            break
    return value, currency  # type: ignore[return-value]
