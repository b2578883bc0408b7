"""A Segment-spec call (identify, track or page), cleaned into a ``Message``.

Everything the caller passed is checked here, on the caller's thread, so the rest of the
pipeline (consent gate, blueprint, delivery) works on values known to be sendable.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Literal, TypeGuard

import attrs

from .._errors import ValidationError
from .._klaviyo.json import JSON, check_str, clean_properties, utf8_size
from .._klaviyo.limits import MAX_EVENT_PROPERTIES
from .._klaviyo.models import Identity
from .consent import resolve_consent
from .identity import identity_from, normalize_id

__all__ = ["Kind", "Message", "Reads", "build_message"]

Kind = Literal["identify", "track", "page"]

_KINDS = ("identify", "track", "page")
# Klaviyo's metric name limit: names must be fewer than 128 characters.
_MAX_NAME = 128
_MAX_MESSAGE_ID = 255
# Klaviyo's event time window: after the year 2000, at most a year ahead.
_EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
_MAX_AHEAD = timedelta(days=365)


@attrs.frozen
class Message:
    """What the caller said, cleaned: the input every blueprint rule and mapper receives."""

    kind: Kind
    event: str | None
    """track: the event name; page and identify: None."""
    name: str | None
    """page: the page name (may be None); track and identify: None."""
    properties: Mapping[str, JSON]
    traits: Mapping[str, JSON]
    """The call's traits merged over ``context["traits"]``."""
    context: Mapping[str, JSON]
    user_id: str | None
    anonymous_id: str | None
    timestamp: datetime
    """When it happened: aware, in UTC."""
    message_id: str
    consent: Mapping[str, bool]
    identity: Identity


@attrs.frozen
class Reads:
    """The top-level keys of a call's properties and context its blueprint can read.

    ``build_message`` checks and copies only these (``_blueprint/reads`` works them out); None: all.
    """

    properties: tuple[str, ...] | None = None
    context: tuple[str, ...] | None = None


_ALL = Reads()


def build_message(
    kind: Kind,
    *,
    event: object = None,
    name: object = None,
    properties: Mapping[str, object] | None = None,
    traits: Mapping[str, object] | None = None,
    context: Mapping[str, object] | None = None,
    user_id: object = None,
    anonymous_id: object = None,
    consent: Mapping[str, object] | None = None,
    timestamp: object = None,
    message_id: object = None,
    default_phone_region: str | None = None,
    now: datetime | None = None,
    reads: Reads | None = None,
    max_properties: int = MAX_EVENT_PROPERTIES,
) -> Message:
    """Check and clean one call into a Message.

    Args:
        kind: Which Segment call this is.
        event: track: the event (metric) name, a non-blank str of fewer than 128 characters.
        name: page: the page name, or None.
        properties: track and page: up to ``max_properties`` (see ``clean_value`` for types).
        traits: Profile traits; merged key by key over ``context["traits"]``.
        context: Segment's context object.
        user_id: Your id for the person (str or int); becomes Klaviyo's ``external_id``.
        anonymous_id: A device or cookie id (str or int).
        consent: Category -> bool, merged over ``context.consent.categoryPreferences``.
        timestamp: When it happened: a datetime (naive means UTC) or an ISO 8601 str;
            default now. Kept to Klaviyo's window of 2000-01-01 to a year from now.
        message_id: A str or UUID that makes retries idempotent; default a new uuid4.
        default_phone_region: Region for phone numbers not in E.164 form (``'GB'``).
        now: The current time, for tests; default the clock.
        reads: What of the properties and context the blueprint reads
            (``CompiledBlueprint.reads``): only that is checked and copied, the rest is never
            sent. None: all of it.
        max_properties: The most properties a call may carry (``CompiledBlueprint``'s
            ``max_properties``, the revision's limit).

    Raises:
        ValidationError: Any input breaks a rule; the message names the field and the rule.
    """
    if kind not in _KINDS:
        raise ValidationError(f"kind: {kind!r} is not one of 'identify', 'track' or 'page'")
    if now is None:
        now = datetime.now(timezone.utc)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    clean_event: str | None
    clean_name: str | None
    if kind == "track" and name is None and plain_name(event):
        clean_event, clean_name = event, None  # the common case, checked in one test
    else:
        clean_event = _metric_name("event", event, takes_it="track", kind=kind)
        clean_name = _metric_name("name", name, takes_it="page", kind=kind)
    if kind == "identify" and properties:
        raise ValidationError(
            "properties: identify calls take traits, not properties; pass them as traits="
        )
    if reads is None:
        reads = _ALL
    clean_props = clean_properties(
        properties, "properties", max_keys=max_properties, only=reads.properties
    )
    clean_context = clean_properties(context, "context", only=reads.context)
    clean_traits = _traits(traits, clean_context)
    uid = None if user_id is None else normalize_id(user_id, "user_id")
    aid = None if anonymous_id is None else normalize_id(anonymous_id, "anonymous_id")
    return Message(
        kind=kind,
        event=clean_event,
        name=clean_name,
        properties=clean_props,
        traits=clean_traits,
        context=clean_context,
        user_id=uid,
        anonymous_id=aid,
        timestamp=_timestamp(timestamp, now),
        message_id=message_id_of(message_id),
        consent=resolve_consent(consent, clean_context),
        identity=identity_from(
            traits=clean_traits,
            user_id=uid,
            anonymous_id=aid,
            default_region=default_phone_region,
        ),
    )


def plain_name(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a plain str that is a valid event name as it is.

    The common case, in one test; anything else goes through the checks that say what is
    wrong with it.
    """
    return (
        type(value) is str
        and 0 < len(value) < _MAX_NAME
        and not value.isspace()
        and (value.isascii() or utf8_size(value) is not None)  # no lone surrogate
    )


def _metric_name(field: str, value: object, *, takes_it: str, kind: str) -> str | None:
    """Check an event name (track) or page name (page): either becomes a metric name."""
    what = "an event name" if field == "event" else "a name"
    if kind != takes_it:
        if value is not None:
            raise ValidationError(f"{field}: only {takes_it} calls take {what} ({kind} was called)")
        return None
    if value is None and field == "name":
        return None  # a page without a name
    if not isinstance(value, str):
        wanted = "a str naming the event" if field == "event" else "a str or None"
        raise ValidationError(
            f"{field}: must be {wanted}, got a value of type {type(value).__name__}"
        )
    if not value.strip():
        hint = "" if field == "event" else "; pass None for a page without a name"
        raise ValidationError(f"{field}: must not be empty{hint}")
    if len(value) >= _MAX_NAME:
        raise ValidationError(
            f"{field}: {value[:40]!r}... is {len(value)} characters; it must be fewer than "
            f"{_MAX_NAME} characters (Klaviyo's metric name limit)"
        )
    return check_str(value, field)  # a lone surrogate cannot be sent


def _traits(traits: Mapping[str, object] | None, context: Mapping[str, JSON]) -> Mapping[str, JSON]:
    explicit = clean_properties(traits, "traits")
    from_context = context.get("traits")
    if from_context is None:
        return explicit
    if not isinstance(from_context, dict):
        raise ValidationError(
            f"context.traits: must be an object, got a value of type {type(from_context).__name__}"
        )
    if not explicit:
        return from_context
    return {**from_context, **explicit}


def _timestamp(value: object, now: datetime) -> datetime:
    if value is None:
        return now if now.tzinfo is timezone.utc else now.astimezone(timezone.utc)
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str):
        when = parse_iso(value)
    else:
        raise ValidationError(
            "timestamp: must be a datetime or an ISO 8601 str, "
            f"got a value of type {type(value).__name__}"
        )
    if when.tzinfo is None or when.utcoffset() is None:
        when = when.replace(tzinfo=timezone.utc)
    try:
        when = when.astimezone(timezone.utc)
    except OverflowError:
        # Only datetimes at the very ends of the calendar overflow when moved to UTC.
        early = when.year < _EARLIEST.year
    else:
        early = when < _EARLIEST
        if not early and when <= now + _MAX_AHEAD:
            return when
    if early:
        raise ValidationError(
            f"timestamp: {when.isoformat()} is before 2000-01-01; "
            "Klaviyo rejects events before the year 2000"
        )
    raise ValidationError(
        f"timestamp: {when.isoformat()} is more than 365 days after now "
        f"({now.astimezone(timezone.utc).isoformat()}); "
        "Klaviyo rejects events over a year in the future"
    )


def parse_iso(value: str, path: str = "timestamp") -> datetime:
    """Read an ISO 8601 date-time (``Z`` accepted); raise ValidationError naming ``path``."""
    text = value.strip()
    # Python 3.10's fromisoformat does not read the "Z" suffix; it means UTC.
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"{path}: {value!r} is not an ISO 8601 date-time "
            "(e.g. '2024-10-15T09:30:00Z' or '2024-10-15T10:30:00+01:00')"
        ) from None


# RFC 4122 version 4: version nibble 0100 (bits 76-79), variant 10 (bits 62-63).
_UUID_CLEAR = ~((0xF << 76) | (0x3 << 62))
_UUID_SET = (0x4 << 76) | (0x2 << 62)


class _Ids:
    """uuid4 strings from a per-process generator seeded by the OS.

    ``uuid.uuid4()`` asks the OS for 16 random bytes on every call, a system call that
    dominated the caller's cost in the benchmark. A message id needs uniqueness, not
    secrecy, so a Mersenne Twister seeded once from ``os.urandom`` (and re-seeded in a
    forked child, so parent and child never repeat ids) does the job at a fraction of it.
    The lifecycle re-seeds it (``reseed_message_ids``) when the first Client is built and
    in every forked child after that; nothing is registered at import.
    """

    def __init__(self) -> None:
        self.random = random.Random()

    def reseed(self) -> None:
        self.random.seed(os.urandom(32))

    def new(self) -> str:
        # uuid.UUID(int=..., version=4) formatted by hand: the same string, a third the cost.
        h = "%032x" % (self.random.getrandbits(128) & _UUID_CLEAR | _UUID_SET)
        return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])  # noqa: UP031


_IDS = _Ids()


def reseed_message_ids() -> None:
    """Seed the message id generator afresh, so no other process repeats its ids."""
    _IDS.reseed()


def new_message_id() -> str:
    """Return a fresh uuid4 string for a call without a message_id."""
    return _IDS.new()


def message_id_of(value: object) -> str:
    """Return the call's id: the one given (checked), or a fresh uuid4."""
    if value is None:
        return new_message_id()
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, str):
        raise ValidationError(
            f"message_id: must be a str or UUID, got a value of type {type(value).__name__}"
        )
    if not value.strip():
        raise ValidationError("message_id: must not be empty")
    if len(value) > _MAX_MESSAGE_ID:
        raise ValidationError(
            f"message_id: {len(value)} characters is over the limit of {_MAX_MESSAGE_ID}"
        )
    return check_str(value, "message_id")  # a lone surrogate cannot be sent
