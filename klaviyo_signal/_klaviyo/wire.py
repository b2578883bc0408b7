"""The one cattrs converter: Klaviyo objects -> JSON:API request bodies.

The ``data``/``type``/``attributes`` nesting and Klaviyo's attribute names live only here,
so the models stay plain values. Bodies stay Python data (with ``Decimal`` kept exact)
until ``encode`` writes the bytes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from json.encoder import encode_basestring
from types import MappingProxyType

import cattrs
from cattrs.gen import make_dict_unstructure_fn

from .._calls.identity import IDENTIFIER_NAMES
from .._calls.subscription import subscription_body
from .json import JSON, dumps, dumps_text, finish
from .models import ClientProfile, Event, KlaviyoObject, Location, Profile

__all__ = [
    "bulk_event",
    "bulk_event_bytes",
    "bulk_events_body",
    "bulk_item_frame",
    "bulk_profile_bytes",
    "bulk_profiles_body",
    "encode",
    "event_body",
    "event_bytes",
    "profile_body",
    "request",
]


def _profile_attributes(profile: Profile) -> dict[str, JSON]:
    attributes: dict[str, JSON] = dict(profile.identity.as_attributes())
    for name in ("first_name", "last_name", "organization", "title", "image", "locale"):
        value = getattr(profile, name)
        if value is not None:
            attributes[name] = value
    if profile.location is not None:
        location = _converter.unstructure(profile.location, Location)
        if location:
            attributes["location"] = location
    if profile.properties:
        attributes["properties"] = dict(profile.properties)
    return attributes


def _profile_resource(profile: Profile) -> dict[str, JSON]:
    return {"data": {"type": "profile", "attributes": _profile_attributes(profile)}}


def _event_attributes(event: Event, *, with_profile: bool) -> dict[str, JSON]:
    properties = dict(event.properties)
    consent: object = properties.get("consent")
    if type(consent) is MappingProxyType:
        # The shared read-only "no consent" mapping becomes a plain dict in every body, so
        # bodies (explain's too) are plain JSON data a user can json.dumps.
        properties["consent"] = dict(consent)
    attributes: dict[str, JSON] = {
        "properties": properties,
        "time": event.time.isoformat(),
        "unique_id": event.unique_id,
        "metric": {"data": {"type": "metric", "attributes": {"name": event.metric}}},
    }
    if event.value is not None:
        attributes["value"] = event.value
    if event.value_currency is not None:
        attributes["value_currency"] = event.value_currency
    if event.backfill:
        attributes["backfill"] = True
    if with_profile:
        attributes["profile"] = _profile_resource(event.profile)
    return attributes


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter()
    # Klaviyo treats an absent location field as "leave unchanged": never send nulls.
    converter.register_unstructure_hook(
        Location, make_dict_unstructure_fn(Location, converter, _cattrs_omit_if_default=True)
    )
    converter.register_unstructure_hook(Profile, _profile_resource)
    converter.register_unstructure_hook(
        Event,
        lambda event: {
            "data": {"type": "event", "attributes": _event_attributes(event, with_profile=True)}
        },
    )
    return converter


_converter = _make_converter()


def event_body(event: Event) -> dict[str, JSON]:
    """Return the body of ``POST /api/events`` for one event."""
    body: dict[str, JSON] = _converter.unstructure(event, Event)
    return body


def profile_body(profile: Profile) -> dict[str, JSON]:
    """Return the body of ``POST /api/profile-import`` (create or update) for one profile."""
    body: dict[str, JSON] = _converter.unstructure(profile, Profile)
    return body


def request(obj: KlaviyoObject) -> tuple[str, dict[str, JSON]]:
    """Return the path and body of the one request ``obj`` becomes when sent alone.

    Sync mode and ``explain`` send each object this way (a subscription as a job of one,
    so the call's outcome is its own); background mode groups events and subscriptions
    into bulk jobs instead.
    """
    if isinstance(obj, Event):
        return "/api/events", event_body(obj)
    if isinstance(obj, Profile):
        return "/api/profile-import", profile_body(obj)
    if isinstance(obj, ClientProfile):
        return "/client/profiles", profile_body(obj.profile)
    return obj.path, subscription_body((obj,))


def bulk_event(event: Event) -> dict[str, JSON]:
    """Return one event as an element of a bulk item's ``events`` array (no profile)."""
    return {"type": "event", "attributes": _event_attributes(event, with_profile=False)}


def bulk_events_body(groups: Iterable[tuple[Profile, Sequence[Event]]]) -> dict[str, JSON]:
    """Return the body of ``POST /api/event-bulk-create-jobs``: one item per profile."""
    items: list[JSON] = [
        {
            "type": "event-bulk-create",
            "attributes": {
                "profile": _profile_resource(profile),
                "events": {"data": [bulk_event(e) for e in events]},
            },
        }
        for profile, events in groups
    ]
    return {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {"events-bulk-create": {"data": items}},
        }
    }


def bulk_profiles_body(profiles: Iterable[Profile]) -> dict[str, JSON]:
    """Return the body of ``POST /api/profile-bulk-import-jobs``: one entry per profile."""
    entries: list[JSON] = [_profile_resource(profile)["data"] for profile in profiles]
    return {
        "data": {
            "type": "profile-bulk-import-job",
            "attributes": {"profiles": {"data": entries}},
        }
    }


def bulk_profile_bytes(profile: Profile) -> bytes:
    """Return ``encode`` of one entry of ``bulk_profiles_body``'s profiles array."""
    return dumps(_profile_resource(profile)["data"])


def encode(body: JSON) -> bytes:
    """Write a body as the UTF-8 JSON bytes that go on the wire."""
    return dumps(body)


# -- the worker's fast path: the same bytes as encode(bulk_event(...)), from templates ----
#
# The worker encodes every queued event once. Building the nested JSON:API dicts and
# walking them again in the encoder cost more than the event's own data; these write the
# fixed parts as text and encode only the values. tests/test_wire.py checks that the bytes
# are identical to the dict route's for every event the corpus makes.

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
    """Return ``encode(bulk_event(event))``, written from a template."""
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
    if backfill:
        text += ',"backfill":true'
    return finish(text + "}}")


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

    ``head + b",".join(events) + tail`` is the item ``bulk_events_body`` would write. A
    tuple of identifiers (email, phone_number, external_id, anonymous_id) stands for the
    profile of just those identifiers (most events').
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
