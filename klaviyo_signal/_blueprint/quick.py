"""The caller's fast lane: the common background ``track`` call, checked and packed at once.

Most calls from a web handler look alike: a plain event name, a dict of flat properties,
an email and/or a user id, nothing else, for an event whose rule is simple (see
``_blueprint.events.simple_extra``). For those, the full route (``build_message`` ->
``CompiledBlueprint.prepare`` -> ``_blueprint.events.pack``) builds a Message, an
Identity, a view and a Pending that nobody else ever sees, only to flatten them into the
queue item. This lane recognises exactly that shape and writes the same queue item
directly.

It never raises and never decides: on anything it does not recognise, and on every input
the full route would refuse, it returns None and the full route runs, with its checks and
its error messages. So the lane can make a call faster, never different
(``tests/blueprint/test_quick.py`` compares the two on generated calls).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from time import time_ns
from types import MappingProxyType

import attrs

from .._calls.identity import plain_email, plain_id
from .._calls.message import new_message_id
from .._klaviyo.json import BYTES_PER_VALUE, MAX_EVENT_PROPERTIES, MEASURE_ABOVE, SAFE_STR_CHARS
from .events import CURRENCY
from .reads import Reads
from .record import MESSAGE_ID, fields
from .rules import Rule

__all__ = ["MESSAGE_ID", "QuickPlan", "quick_plan", "quick_track"]


_isfinite = math.isfinite
_NO_PROPERTIES: Mapping[str, object] = MappingProxyType({})
# The JSON ints Python can write: see _json._MAX_INT.
_MAX_INT = 10**4000


@attrs.frozen
class QuickPlan:
    """What the lane needs of one event's rule, worked out once per event name."""

    key: tuple[str, str]
    """The rule's blueprint key (``CompiledBlueprint.rule_for``)."""
    reads: tuple[str, ...]
    """The property keys the rule reads, in the order the full route copies them."""
    max_keys: int
    """The most properties a call may carry (the rule adds its own to them)."""
    value: tuple[str, ...]
    """The property keys that feed ``value``: the first one not null wins."""
    currency: tuple[str, ...]
    """Likewise for ``value_currency``."""
    traits: bool
    """Whether an ``email`` trait still leaves the event's profile bare."""


def quick_plan(
    key: tuple[str, str], rule: Rule, reads: Reads, extra: int, *, traits_only: bool
) -> QuickPlan | None:
    """Return the lane's plan for a simple, enabled rule, or None if its calls cannot use it.

    Args:
        key: The rule's blueprint key.
        rule: The rule (simple: ``simple_extra`` gave ``extra``).
        reads: What the rule reads (``CompiledBlueprint.reads``).
        extra: How many properties the rule adds.
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
        max_keys=MAX_EVENT_PROPERTIES - extra,
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
) -> tuple[tuple[object, ...], int] | None:
    """Return a common call's queue fields (``_blueprint/record``) and
    the size its properties count against ``max_queue_bytes``; None: use the full route.

    The call has no context, timestamp or message id, and its ``consent`` (if any) is a
    request context's, checked already and not a denial (the Client checked). Its
    time is ``time.time_ns()``: the worker writes it as the ISO string ``datetime.now()``
    would give (``_klaviyo.wire.iso_time``), for less than the cost of making the datetime.
    """
    if properties is None:
        properties = _NO_PROPERTIES
    elif type(properties) is not dict or len(properties) > plan.max_keys:
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
    # As _delivery/queue._size counts the properties: a fixed cost per value, plus the length of
    # keys and strings.
    size += (len(pairs) // 2 + 1) * BYTES_PER_VALUE
    if size > MEASURE_ABOVE:
        return None  # it may not fit one request: the full route measures it exactly
    return record, size


def _read(
    keys: tuple[str, ...], properties: Mapping[str, object]
) -> tuple[list[object], int] | None:
    """Return the read properties as key, value pairs and their text length, if all are
    values the full route keeps as they are (``_klaviyo.json._clean_mapping``'s first test)."""
    pairs: list[object] = []
    size = 0
    for key in keys:
        if key not in properties:
            continue
        item = properties[key]
        kind = type(item)
        if kind is str:
            if len(item) > SAFE_STR_CHARS or not item.isascii():  # type: ignore[arg-type,attr-defined]
                return None
            size += len(item)  # type: ignore[arg-type]
        elif not (
            (kind is int and -_MAX_INT < item < _MAX_INT)  # type: ignore[operator]
            or (kind is float and _isfinite(item))  # type: ignore[arg-type]
            or item is None
            or kind is bool
        ):
            return None
        pairs.append(key)
        pairs.append(item)
        size += len(key)
    return pairs, size


_NO_MONEY = (None, None)
# The codes that passed ``CURRENCY`` (a set of strs: a call's currency is a str here).
_CURRENCIES: set[str] = set()
_CURRENCIES_KEPT = 512


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
            if type(value) is not int and type(value) is not float:
                return None  # a bool, a str: the full route says what is wrong
            break
    for key in plan.currency:
        currency = properties.get(key)
        if currency is not None:
            if type(currency) is not str:
                return None
            if currency not in _CURRENCIES:
                if not CURRENCY.fullmatch(currency):
                    return None
                if len(_CURRENCIES) < _CURRENCIES_KEPT:
                    _CURRENCIES.add(currency)  # a set lookup, not a regex, the next time
            break
    return value, currency  # type: ignore[return-value]
