"""The one cattrs converter: Klaviyo objects -> JSON:API request bodies.

The ``data``/``type``/``attributes`` nesting and Klaviyo's attribute names live only here,
so the models stay plain values. Bodies stay Python data (with ``Decimal`` kept exact)
until ``encode`` writes the bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import MappingProxyType

import cattrs
from cattrs.gen import make_dict_unstructure_fn

from ._json import JSON, dumps
from ._models import Event, Location, Profile

__all__ = ["bulk_event", "bulk_events_body", "encode", "event_body", "profile_body"]


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


def encode(body: JSON) -> bytes:
    """Write a body as the UTF-8 JSON bytes that go on the wire."""
    return dumps(body)
