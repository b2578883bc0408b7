"""The one encoder: Klaviyo objects -> the JSON:API bytes of every request body.

The ``data``/``type``/``attributes`` nesting and Klaviyo's attribute names live only here,
so the models stay plain values. An event's fixed parts are written as text from templates
and only its values go through the JSON encoder (an event is encoded once, on the worker,
for every queued call); profiles and subscriptions are built as dicts and encoded whole.
Sync mode, background jobs and ``explain`` all take their bytes from here, and every body
keeps a ``Decimal`` exact.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from json.encoder import encode_basestring
from types import MappingProxyType

import attrs

from .json import JSON, dumps, dumps_text, finish
from .limits import MAX_SUBSCRIPTION_PROFILES
from .models import IDENTIFIER_NAMES, ClientProfile, Event, KlaviyoObject, Profile, Subscription

__all__ = [
    "BULK_JOB_FRAME",
    "PROFILE_JOB_FRAME",
    "bulk_event_bytes",
    "bulk_item_frame",
    "bulk_profile_bytes",
    "event_bytes",
    "profile_bytes",
    "request",
    "single_event_bytes",
    "subscription_body",
    "subscription_bytes",
]

_PROFILE_TEXT = ("first_name", "last_name", "organization", "title", "image", "locale")


def _profile_attributes(profile: Profile) -> dict[str, JSON]:
    attributes: dict[str, JSON] = dict(profile.identity.as_attributes())
    for name in _PROFILE_TEXT:
        value = getattr(profile, name)
        if value is not None:
            attributes[name] = value
    if profile.location is not None:
        # Klaviyo treats an absent location field as "leave unchanged": never send nulls.
        location: dict[str, JSON] = {
            name: value
            for name, value in attrs.asdict(profile.location).items()
            if value is not None
        }
        if location:
            attributes["location"] = location
    if profile.properties:
        attributes["properties"] = dict(profile.properties)
    return attributes


def _profile_resource(profile: Profile) -> dict[str, JSON]:
    return {"data": {"type": "profile", "attributes": _profile_attributes(profile)}}


def profile_bytes(profile: Profile) -> bytes:
    """Return the body of ``POST /api/profile-import`` (or ``/client/profiles``) for a profile."""
    return dumps(_profile_resource(profile))


def request(obj: KlaviyoObject) -> tuple[str, bytes]:
    """Return the path and body of the one request ``obj`` becomes when sent alone.

    Sync mode and ``explain`` send each object this way (a subscription as a job of one,
    so the call's outcome is its own); background mode groups events and subscriptions
    into bulk jobs of the same encoding instead.
    """
    if isinstance(obj, Event):
        return "/api/events", single_event_bytes(obj)
    if isinstance(obj, Profile):
        return "/api/profile-import", profile_bytes(obj)
    if isinstance(obj, ClientProfile):
        return "/client/profiles", profile_bytes(obj.profile)
    return obj.path, subscription_bytes((obj,))


def _subscriptions(sub: Subscription) -> dict[str, JSON]:
    consent = "SUBSCRIBED" if sub.action == "subscribe" else "UNSUBSCRIBED"
    record: dict[str, JSON] = {"consent": consent}
    if sub.consented_at is not None:
        record["consented_at"] = sub.consented_at.isoformat()
    out: dict[str, JSON] = {}
    if "email" in sub.channels:
        out["email"] = {"marketing": dict(record)}
    sms: dict[str, JSON] = {}
    if "sms" in sub.channels:
        sms["marketing"] = dict(record)
    if "sms_transactional" in sub.channels:
        sms["transactional"] = dict(record)
    if sms:
        out["sms"] = sms
    return out


def _subscription_profile(sub: Subscription) -> JSON:
    attributes: dict[str, JSON] = {}
    if sub.email is not None:
        attributes["email"] = sub.email
    if sub.phone_number is not None:
        attributes["phone_number"] = sub.phone_number
    attributes["subscriptions"] = _subscriptions(sub)
    return {"type": "profile", "attributes": attributes}


def subscription_body(subs: Sequence[Subscription]) -> dict[str, JSON]:
    """Return one bulk job body for calls that share a ``job_key``.

    Raises:
        ValueError: ``subs`` is empty, mixes job keys, or exceeds Klaviyo's per-job limit.
    """
    if not subs or len({sub.job_key for sub in subs}) != 1:
        raise ValueError("a subscription job needs one or more calls with the same job_key")
    first = subs[0]
    if len(subs) > MAX_SUBSCRIPTION_PROFILES[first.action]:
        raise ValueError(
            f"at most {MAX_SUBSCRIPTION_PROFILES[first.action]} profiles per {first.action} job"
        )
    attributes: dict[str, JSON] = {
        "profiles": {"data": [_subscription_profile(sub) for sub in subs]}
    }
    if first.action == "subscribe":
        if first.custom_source is not None:
            attributes["custom_source"] = first.custom_source
        if first.consented_at is not None:
            attributes["historical_import"] = True
    kind = "create" if first.action == "subscribe" else "delete"
    data: dict[str, JSON] = {
        "type": f"profile-subscription-bulk-{kind}-job",
        "attributes": attributes,
    }
    if first.list_id is not None:
        data["relationships"] = {"list": {"data": {"type": "list", "id": first.list_id}}}
    return {"data": data}


def subscription_bytes(subs: Sequence[Subscription]) -> bytes:
    """Return ``subscription_body(subs)`` as the bytes that go on the wire."""
    return dumps(subscription_body(subs))


def bulk_profile_bytes(profile: Profile) -> bytes:
    """Return one entry of a profile import job's ``profiles`` array (see ``PROFILE_JOB_FRAME``)."""
    return dumps(_profile_resource(profile)["data"])


# -- events, from templates ----------------------------------------------------------------
#
# Building the nested JSON:API dicts of an event and walking them again in the encoder
# cost more than the event's own data; these write the fixed parts as text and encode
# only the values.

_EVENT_HEAD = '{"type":"event","attributes":{"properties":'
_METRIC_HEAD = ',"metric":{"data":{"type":"metric","attributes":{"name":'
_ITEM_HEAD = '{"type":"event-bulk-create","attributes":{"profile":'
_ITEM_TAIL = b"]}}}"
_BARE_HEAD = _ITEM_HEAD + '{"data":{"type":"profile","attributes":'
_BARE_TAIL = '}}},"events":{"data":['
_IDENTIFIER_KEYS = tuple(f'"{name}":' for name in IDENTIFIER_NAMES)


def _number_text(value: int | float | Decimal) -> str:
    kind = type(value)
    if kind is float:
        return float.__repr__(value)  # what json writes for a finite float
    if kind is int:
        return int.__repr__(value)
    return dumps_text(value)


def bulk_event_bytes(event: Event) -> bytes:
    """Return one event as an element of a bulk item's ``events`` array (no profile)."""
    return event_bytes(
        event.metric,
        event.properties,
        event.time,
        event.unique_id,
        value=event.value,
        value_currency=event.value_currency,
        backfill=event.backfill,
    )


def event_bytes(
    metric: str,
    properties: Mapping[str, JSON],
    time: datetime | int,
    unique_id: str,
    *,
    value: int | float | Decimal | None,
    value_currency: str | None,
    backfill: bool = False,
) -> bytes:
    """Return the bytes of one bulk event from its fields (no ``Event`` object needed)."""
    text = _event_text(
        metric, properties, time, unique_id, value=value, value_currency=value_currency
    )
    if backfill:
        text += ',"backfill":true'
    return finish(text + "}}")


def single_event_bytes(event: Event) -> bytes:
    """Return the body of ``POST /api/events``: the bulk element's text, and its profile."""
    text = _event_text(
        event.metric,
        event.properties,
        event.time,
        event.unique_id,
        value=event.value,
        value_currency=event.value_currency,
    )
    if event.backfill:
        text += ',"backfill":true'
    profile = dumps_text(_profile_resource(event.profile))
    return finish('{"data":' + text + ',"profile":' + profile + "}}}")


def _event_text(
    metric: str,
    properties: Mapping[str, JSON],
    time: datetime | int,
    unique_id: str,
    *,
    value: int | float | Decimal | None,
    value_currency: str | None,
) -> str:
    """Return an event's text up to the end of its attributes, left open for more."""
    consent: object = properties.get("consent")
    if type(consent) is MappingProxyType:
        # The shared "no consent" mapping: a plain dict encodes without the fallback hook.
        properties = {**properties, "consent": dict(consent)}
    # One concatenation: cheaper than a list and a join for this handful of pieces.
    text = (
        _EVENT_HEAD
        + dumps_text(properties)
        + ',"time":"'
        + (time.isoformat() if type(time) is datetime else iso_time(time))  # type: ignore[arg-type]
        + '","unique_id":'
        + encode_basestring(unique_id)
        + _METRIC_HEAD
        + _metric_text(metric)
    )
    if value is not None:
        text += ',"value":' + _number_text(value)
    if value_currency is not None:
        text += ',"value_currency":' + encode_basestring(value_currency)
    return text


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SECONDS: dict[int, str] = {}  # whole seconds since the epoch -> "YYYY-MM-DDTHH:MM:SS"


def iso_time(ns: int) -> str:
    """Return ``time.time_ns()`` as the ISO 8601 UTC string of its datetime.

    The same text as ``datetime.now(timezone.utc).isoformat()`` at that microsecond
    (microseconds left out when zero), with the date part made once per second.
    """
    seconds, rest = divmod(ns, 1_000_000_000)
    prefix = _SECONDS.get(seconds)
    if prefix is None:
        if len(_SECONDS) >= 1024:
            _SECONDS.clear()
        prefix = _SECONDS[seconds] = (_EPOCH + timedelta(seconds=seconds)).isoformat()[:19]
    micros = rest // 1000
    if micros:
        return "%s.%06d+00:00" % (prefix, micros)  # noqa: UP031 - the fastest spelling here
    return prefix + "+00:00"


@functools.lru_cache(maxsize=256)
def _metric_text(metric: str) -> str:
    return encode_basestring(metric) + "}}}"


def bulk_item_frame(
    profile: Profile | tuple[str | None, str | None, str | None, str | None],
) -> tuple[bytes, bytes]:
    """Return what goes before and after a bulk item's events: its profile, the array's ends.

    ``head + b",".join(events) + tail`` is one item of a bulk job's ``events-bulk-create``
    array. A tuple of identifiers (email, phone_number, external_id, anonymous_id) stands
    for the profile of just those identifiers (most events').
    """
    if isinstance(profile, tuple):
        # Identity.as_attributes() through the encoder, written by hand: one per bulk item.
        # (Identifiers are strings: no Decimal to finish.)
        fields = [
            _IDENTIFIER_KEYS[index] + encode_basestring(value)
            for index, value in enumerate(profile)
            if value is not None
        ]
        head = (_BARE_HEAD + "{" + ",".join(fields) + _BARE_TAIL).encode("utf-8")
    else:
        resource = dumps_text(_profile_resource(profile))
        head = finish(f'{_ITEM_HEAD}{resource},"events":{{"data":[')
    return head, _ITEM_TAIL


BULK_JOB_FRAME = (
    b'{"data":{"type":"event-bulk-create-job","attributes":{"events-bulk-create":{"data":[',
    b"]}}}}",
)
"""What goes before and after the comma-joined items of ``POST /api/event-bulk-create-jobs``."""

PROFILE_JOB_FRAME = (
    b'{"data":{"type":"profile-bulk-import-job","attributes":{"profiles":{"data":[',
    b"]}}}}",
)
"""What goes before and after the comma-joined entries of ``POST /api/profile-bulk-import-jobs``."""
