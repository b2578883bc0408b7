"""The one encoder writes the JSON:API documents Klaviyo's schemas describe, values exact.

Events are written from templates (``bulk_event_bytes``, ``single_event_bytes``, and
``bulk_item_frame`` through ``OpenJob``); each is checked against a reference document
built here from the event's fields, for every event the corpus makes and for the values
JSON treats specially, and against the official schema of its endpoint.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from klaviyo_signal import ValidationError
from klaviyo_signal._blueprint.blueprint import Blueprint
from klaviyo_signal._blueprint.compiled import compile_blueprint
from klaviyo_signal._blueprint.record import ITEM_IDENTITY, ITEM_RULE
from klaviyo_signal._calls.message import Message, build_message
from klaviyo_signal._delivery.jobs import OpenJob, encode_queued
from klaviyo_signal._klaviyo.models import Event, Identity, Location, Profile
from klaviyo_signal._klaviyo.wire import bulk_event_bytes, iso_time, single_event_bytes
from tests.blueprint.test_corpus import CASES, _forward_everything
from tests.conftest import assert_valid


def _messages() -> list[Message]:
    """The corpus's track and page calls that pass the SDK's checks, as Messages."""
    messages: list[Message] = []
    for case in CASES:
        message = case["message"]
        kind = message.get("type")
        if kind == "screen":
            kind = "page"
        if kind not in ("track", "page"):
            continue
        try:
            messages.append(
                build_message(
                    kind,
                    event=message.get("event") if kind == "track" else None,
                    name=message.get("name") if kind == "page" else None,
                    properties=message.get("properties"),
                    traits=message.get("traits") if kind == "track" else None,
                    context=message.get("context"),
                    user_id=message.get("userId"),
                    anonymous_id=message.get("anonymousId"),
                    timestamp=message.get("timestamp") or message.get("originalTimestamp"),
                    message_id=message.get("messageId"),
                )
            )
        except ValidationError:
            continue
    return messages


def _events(blueprint: Blueprint) -> list[Event]:
    return [
        obj
        for message in _messages()
        for obj in compile_blueprint(blueprint).decide(message).objects
        if isinstance(obj, Event)
    ]


def _exact(value: Any) -> Any:
    """A reference value as ``json.loads(..., parse_float=Decimal)`` reads it back."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {key: _exact(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_exact(item) for item in value]
    return value


def _profile_document(profile: Profile) -> dict[str, Any]:
    attributes: dict[str, Any] = dict(profile.identity.as_attributes())
    for name in ("first_name", "last_name", "organization", "title", "image", "locale"):
        if getattr(profile, name) is not None:
            attributes[name] = getattr(profile, name)
    if profile.location is not None:
        location = {k: v for k, v in attrs.asdict(profile.location).items() if v is not None}
        if location:
            attributes["location"] = location
    if profile.properties:
        attributes["properties"] = dict(profile.properties)
    return {"data": {"type": "profile", "attributes": attributes}}


def _event_attributes(event: Event) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "properties": {k: dict(v) if k == "consent" else v for k, v in event.properties.items()},
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
    return attributes


def _loads(body: bytes) -> Any:
    return json.loads(body, parse_float=Decimal)


def _check(event: Event) -> None:
    element = {"type": "event", "attributes": _event_attributes(event)}
    assert _loads(bulk_event_bytes(event)) == _exact(element)
    single = single_event_bytes(event)
    expected = {"data": {**element, "attributes": {**element["attributes"]}}}
    expected["data"]["attributes"]["profile"] = _profile_document(event.profile)
    assert _loads(single) == _exact(expected)
    assert_valid("/api/events", json.loads(single))
    job = OpenJob()
    assert job.add(bulk_event_bytes(event), event.profile, object(), 0.0)
    body = job.seal().body()
    item = {
        "type": "event-bulk-create",
        "attributes": {
            "profile": _profile_document(event.profile),
            "events": {"data": [element]},
        },
    }
    document = {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {"events-bulk-create": {"data": [item]}},
        }
    }
    assert _loads(body) == _exact(document)
    assert_valid("/api/event-bulk-create-jobs", json.loads(body))


def test_decimals_are_written_exactly() -> None:
    """A Decimal goes on the wire as its own digits, never through float."""
    event = _event(value=Decimal("19.990"), properties={"total": Decimal("1E+2"), "consent": {}})
    for body in (bulk_event_bytes(event), single_event_bytes(event)):
        assert b'"value":19.990' in body
        assert b'"total":1E+2' in body


def test_corpus_events_encode_identically() -> None:
    """Every event the corpus makes is written as its reference document, valid by schema."""
    events = _events(_forward_everything())
    assert len(events) > 100
    for event in events:
        _check(event)


def _event(**changes: Any) -> Event:
    fields: dict[str, Any] = {
        "metric": "purchase",
        "profile": Profile(Identity(email="ana@example.com", external_id="u-1")),
        "properties": {"order_id": "A-1", "consent": {}},
        "time": datetime(2026, 11, 27, 9, 30, 1, 250, tzinfo=timezone.utc),
        "unique_id": "m-1",
        "value": 19.99,
        "value_currency": "USD",
    }
    fields.update(changes)
    return Event(**fields)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"value": None, "value_currency": None},
        {"value": Decimal("19.990"), "properties": {"total": Decimal("1E+2"), "consent": {}}},
        {"value": 10**20},
        {"value": 1e-7},
        {"metric": 'Größe "quoted" \\ \u2028', "unique_id": "ü\n\t"},
        {"properties": {"emoji": "\U0001f600", "nested": [{"a": None, "b": True}]}},
        {
            "profile": Profile(
                Identity(phone_number="+447700900123"),
                first_name="Zoë",
                location=Location(city="Köln", latitude=50.9),
                properties={"tier": "gold", "n": Decimal("2.50")},
            )
        },
    ],
    ids=["plain", "no-value", "decimal", "big-int", "small-float", "escapes", "unicode", "profile"],
)
def test_special_values_encode_identically(changes: dict[str, Any]) -> None:
    """Values JSON treats specially are written as the reference document has them."""
    _check(_event(**changes))


def test_pending_calls_encode_like_decided_ones() -> None:
    """The worker's route for simple calls (their queue record) writes decide's bytes."""
    blueprint = _forward_everything()
    deferred = 0
    for message in _messages():
        prepared = compile_blueprint(blueprint).prepare(message)
        if not isinstance(prepared, tuple):
            continue
        record, _ = prepared
        deferred += 1
        (event,) = compile_blueprint(blueprint).decide(message).objects
        assert isinstance(event, Event)
        # As the worker reads it: straight from the queue item.
        item = (0, (), *record)
        data = encode_queued(item, compile_blueprint(blueprint).rule_for(item[ITEM_RULE]))  # type: ignore[arg-type]
        assert data == bulk_event_bytes(event)
        job = OpenJob()
        assert job.add(data, item[ITEM_IDENTITY], object(), 0.0)  # type: ignore[arg-type]
        assert _loads(job.seal().body())["data"]["attributes"]["events-bulk-create"]["data"][0][
            "attributes"
        ]["events"]["data"] == [_loads(bulk_event_bytes(event))]
    assert deferred > 50


@given(st.integers(min_value=946_684_800 * 10**9, max_value=4_102_444_800 * 10**9))
def test_iso_time_writes_what_the_datetime_would(ns: int) -> None:
    """A fast-lane time (time.time_ns()) is written as its datetime's isoformat()."""
    when = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=ns // 1000)
    assert iso_time(ns) == when.isoformat()
    whole = ns - ns % 10**9  # a whole second: isoformat leaves the microseconds out
    assert iso_time(whole) == (when - timedelta(microseconds=when.microsecond)).isoformat()
