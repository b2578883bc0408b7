"""The worker's template encoders write the same bytes as the dict route, byte for byte.

``bulk_event_bytes`` and ``bulk_item_frame`` (through ``OpenJob``) skip building JSON:API
dicts on the worker's hot path; ``encode(bulk_event(...))`` and ``bulk_events_body`` are
the reference they must match, for every event the corpus makes and for the values JSON
treats specially.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klaviyo_signal import ValidationError
from klaviyo_signal._blueprint.blueprint import Blueprint
from klaviyo_signal._blueprint.events import Pending, pack
from klaviyo_signal._calls.identity import Identity
from klaviyo_signal._calls.message import Message, build_message
from klaviyo_signal._delivery.jobs import OpenJob, encode_queued
from klaviyo_signal._klaviyo.models import Event, Location, Profile
from klaviyo_signal._klaviyo.wire import (
    bulk_event,
    bulk_event_bytes,
    bulk_events_body,
    encode,
    iso_time,
)

from .conftest import assert_valid
from .test_corpus import CASES, _forward_everything


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
        for obj in blueprint.decide(message).objects
        if isinstance(obj, Event)
    ]


def _check(event: Event) -> None:
    assert bulk_event_bytes(event) == encode(bulk_event(event))
    job = OpenJob()
    assert job.add(bulk_event_bytes(event), event.profile, object(), 0.0)
    body = job.seal().body()
    assert body == encode(bulk_events_body([(event.profile, [event])]))
    assert_valid("/api/event-bulk-create-jobs", json.loads(body))


def test_corpus_events_encode_identically() -> None:
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
    _check(_event(**changes))


def test_pending_calls_encode_like_decided_ones() -> None:
    """The worker's route for simple calls (Pending or its queue item) writes decide's bytes."""
    blueprint = _forward_everything()
    deferred = 0
    for message in _messages():
        prepared = blueprint.prepare(message)
        if not isinstance(prepared, Pending):
            continue
        deferred += 1
        (event,) = blueprint.decide(message).objects
        assert isinstance(event, Event)
        # As the worker reads it: straight from the queue item.
        data = encode_queued((0, (), *pack(prepared)), blueprint.rule_for(prepared.rule))
        assert data == bulk_event_bytes(event)
        job = OpenJob()
        assert job.add(data, prepared.identity, object(), 0.0)
        assert job.seal().body() == encode(bulk_events_body([(event.profile, [event])]))
    assert deferred > 50


@given(st.integers(min_value=946_684_800 * 10**9, max_value=4_102_444_800 * 10**9))
def test_iso_time_writes_what_the_datetime_would(ns: int) -> None:
    """A fast-lane time (time.time_ns()) is written as its datetime's isoformat()."""
    when = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=ns // 1000)
    assert iso_time(ns) == when.isoformat()
    whole = ns - ns % 10**9  # a whole second: isoformat leaves the microseconds out
    assert iso_time(whole) == (when - timedelta(microseconds=when.microsecond)).isoformat()
