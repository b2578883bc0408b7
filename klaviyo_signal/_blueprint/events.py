"""One rule applied to one call: the Klaviyo events it becomes.

Everything here reads values the blueprint named; the checks that remain are about the
call's data (a revenue that is not a number), so they raise ``ValidationError`` naming the
path, on the caller's line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import cast

from .._calls.message import Message, _timestamp
from .._errors import ValidationError
from .._klaviyo.json import JSON, clean_properties, estimate
from .._klaviyo.limits import MAX_EVENT_PROPERTIES
from .._klaviyo.models import Event, Profile
from .paths import MISSING, lookup, message_view
from .properties import CONSENT, apply_properties, first_present, passes_through
from .record import Packed, fields
from .rules import ItemRule, Mapper, Rule

__all__ = [
    "CURRENCY",
    "build_events",
    "is_amount",
    "is_currency",
    "pack",
    "reserved_consent",
    "simple_room",
]

# fullmatch, not match with "$": "$" also matches before a final newline ("USD\n").
CURRENCY = re.compile(r"[A-Z]{3}")


def is_amount(value: object) -> bool:
    """Whether ``value`` can feed Klaviyo's ``value`` (revenue): a number, not a bool."""
    kind = type(value)
    if kind is int or kind is float:
        return True
    return not isinstance(value, bool) and isinstance(value, (int, float, Decimal))


# The codes that passed ``CURRENCY``, so a repeated one costs a set lookup, not a regex;
# bounded, as the codes are the caller's.
_CURRENCIES: set[str] = set()
_CURRENCIES_KEPT = 512


def is_currency(value: object) -> bool:
    """Whether ``value`` can feed ``value_currency``: an ISO 4217 code in capitals."""
    if type(value) is str and value in _CURRENCIES:
        return True
    if not isinstance(value, str) or not CURRENCY.fullmatch(value):
        return False
    if type(value) is str and len(_CURRENCIES) < _CURRENCIES_KEPT:
        _CURRENCIES.add(value)
    return True


def _number(view: Mapping[str, JSON], paths: tuple[str, ...]) -> int | float | Decimal | None:
    found = first_present(view, paths)
    if found is None:
        return None
    path, value = found
    if not is_amount(value):
        raise ValidationError(
            f"{path}: must be a number to feed Klaviyo's value (revenue), got {value!r}"
        )
    return value  # type: ignore[return-value]


def _currency(view: Mapping[str, JSON], paths: tuple[str, ...]) -> str | None:
    found = first_present(view, paths)
    if found is None:
        return None
    path, value = found
    if not is_currency(value):
        raise ValidationError(
            f"{path}: must be an ISO 4217 currency code in capitals such as 'USD', got {value!r}"
        )
    return value  # type: ignore[return-value]


def _unique_id(view: Mapping[str, JSON], path: str, message: Message) -> str:
    if path == "message_id":  # the default: no lookup on the caller's hot path
        return message.message_id
    found = first_present(view, (path,))
    if found is None:
        return message.message_id
    value = found[1]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ValidationError(f"{path}: must be a non-empty str or int to be the unique_id")
    return str(value)


def _time(view: Mapping[str, JSON], path: str, message: Message) -> datetime:
    if path == "timestamp":
        return message.timestamp
    found = first_present(view, (path,))
    if found is None:
        return message.timestamp
    try:
        return _timestamp(found[1], datetime.now(timezone.utc))
    except ValidationError as exc:
        raise ValidationError(f"{path}: {str(exc).removeprefix('timestamp: ')}") from None


def reserved_consent(path: str) -> ValidationError:
    """The error for a caller's value that would take the ``consent`` event property."""
    return ValidationError(
        f"{path}: the event property 'consent' is reserved for the call's consent state, "
        "which klaviyo-signal writes there on every event; pass consent state as "
        "consent={'marketing': True}, and send this value under another name (or rename "
        "it in the blueprint rule: PropertyMap(rename={'consent': 'consent_value'}))"
    )


def _checked(properties: dict[str, JSON], metric: str, most: int) -> dict[str, JSON]:
    if len(properties) > most:
        raise ValidationError(
            f"{metric}: the blueprint made {len(properties)} properties, over Klaviyo's "
            f"limit of {most}"
        )
    return properties


def _item_events(
    items: ItemRule, view: Mapping[str, JSON], parent: Event, consent: dict[str, JSON], most: int
) -> list[Event]:
    found = lookup(view, items.path).value
    if found is MISSING or found is None:
        return []
    if not isinstance(found, list):
        raise ValidationError(
            f"{items.path}: must be a list to send one {items.metric!r} event per item, "
            f"got {found!r}"
        )
    events = []
    for index, item in enumerate(found):
        if not isinstance(item, dict):
            raise ValidationError(f"{items.path}[{index}]: must be an object, got {item!r}")
        item_view = {**view, "item": item}
        properties = apply_properties(items.properties, item, item_view)
        if CONSENT in properties:
            raise reserved_consent(f"{items.path}[{index}].{CONSENT}")
        properties[CONSENT] = consent
        events.append(
            Event(
                metric=items.metric,
                profile=parent.profile,
                properties=_checked(properties, items.metric, most),
                time=parent.time,
                unique_id=f"{parent.unique_id}:{index}",
                value=_number(item_view, items.value),
                value_currency=_currency(item_view, items.value_currency),
            )
        )
    return events


def build_events(
    rule: Rule,
    message: Message,
    profile: Profile,
    mapper: Mapper | None,
    *,
    view: Mapping[str, JSON] | None = None,
    most: int = MAX_EVENT_PROPERTIES,
) -> tuple[Event, ...] | None:
    """Return the events ``rule`` makes of ``message``, or None when its mapper drops it.

    Args:
        rule: The rule that matched.
        message: The cleaned call.
        profile: The event's profile, already mapped.
        mapper: The blueprint-wide mapper; a rule's own mapper wins over it.
        view: ``message_view(message)``, when the caller already has it.
        most: The most properties an event may carry (the revision's limit).
    """
    view = message_view(message) if view is None else view
    mapper = rule.mapper or mapper
    if mapper is not None:
        mapped = mapper(message)
        if mapped is None:
            return None
        source = f"mapper {getattr(mapper, '__qualname__', mapper)!s}"
        properties = clean_properties(mapped, source)
        if CONSENT in properties:
            raise reserved_consent(f"{source}: {CONSENT}")
    else:
        properties = apply_properties(rule.properties, message.properties, view)
        if CONSENT in properties:
            raise reserved_consent(f"properties.{CONSENT}")
    # The Message's own dict, built fresh for this call: shared by its events, not copied
    # (every byte here is held per queued event).
    consent = cast(dict[str, JSON], message.consent)
    properties[CONSENT] = consent
    event = Event(
        metric=rule.metric,
        profile=profile,
        properties=_checked(properties, rule.metric, most),
        time=_time(view, rule.time, message),
        unique_id=_unique_id(view, rule.unique_id, message),
        value=_number(view, rule.value),
        value_currency=_currency(view, rule.value_currency),
    )
    if rule.items is None:
        return (event,)
    return (event, *_item_events(rule.items, view, event, consent, most))


def simple_room(rule: Rule, mapper: Mapper | None, most: int) -> int | None:
    """Return how many of a call's own properties a simple rule's event has room for, or
    None if the rule is not simple.

    A rule is simple when ``build_events`` can only fail in ``pack``'s checks (and on
    the property count): no mapper, no per-item events, no source paths, the default time
    and unique_id. Its calls are checked on the caller's thread and built later; a call
    with more properties than the room goes through ``build_events``, which says so.
    """
    pmap = rule.properties
    if (
        mapper is not None
        or rule.mapper is not None
        or rule.items is not None
        or pmap.sources
        or rule.time != "timestamp"
        or rule.unique_id != "message_id"
    ):
        return None
    extra = len(pmap.rename) + len(pmap.defaults) + len(pmap.constants) + 1  # + consent
    return most - extra


def pack(key: tuple[str, str], rule: Rule, message: Message, view: Mapping[str, JSON]) -> Packed:
    """Check a simple rule's call as ``build_events`` would; return its queue record and
    size (``_blueprint/record``), for the worker to build the event from.

    Raises:
        ValidationError: The value is not a number, the currency not an ISO 4217 code, or
            a property would take the reserved ``consent`` key.
    """
    if CONSENT in message.properties and passes_through(rule.properties, CONSENT):
        raise reserved_consent(f"properties.{CONSENT}")
    pairs = [part for pair in message.properties.items() for part in pair]
    record = fields(
        key,
        message.identity.key(),
        message.timestamp,
        message.message_id,
        message.consent or None,
        _number(view, rule.value),
        _currency(view, rule.value_currency),
        pairs,
    )
    return record, estimate(message.properties)
