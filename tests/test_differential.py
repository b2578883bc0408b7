"""Differential tests at FakeKlaviyo: the same calls by different routes record the same bytes.

The caller's fast lane (``_blueprint/quick.py``) and the full route, and sync mode's
``POST /api/events`` and background mode's bulk jobs, are compared where a user would
look: what FakeKlaviyo received and recorded. Only the clock and the id generator are
pinned, so both runs of a call carry the same time and unique_id.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timezone
from typing import Any

import pytest

from klaviyo_signal import Client, DeliveryStatus, default_blueprint
from klaviyo_signal._blueprint import quick
from klaviyo_signal.testing import FakeKlaviyo
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY

_START_NS = 1_764_950_400_000_000_000  # 2025-12-05T16:00:00Z, whole microseconds below


_LANE_EVENTS = ("Product Viewed", "Order Completed")  # simple rules: the lane takes them


def _calls(events: tuple[str, ...] = _LANE_EVENTS) -> list[dict[str, Any]]:
    """Common web-handler calls of ``events``, flat properties."""
    calls: list[dict[str, Any]] = []
    shapes = [
        {"properties": {"sku": "A-1", "price": 19.99, "name": "Tee"}, "user_id": "u-1"},
        {"properties": {"order_id": "o-1", "revenue": 42.5, "currency": "GBP"}, "user_id": "u-2"},
        {"properties": {}, "traits": {"email": "ana@example.com"}},
        {"properties": {"flag": True, "n": None, "count": 3}, "anonymous_id": "anon-9"},
        {"properties": {"sku": "B-2"}, "user_id": "u-1", "traits": {"email": "ana@example.com"}},
    ]
    for event in events:
        for shape in shapes:
            calls.append({"event": event, **shape})
    return calls


def _pinned(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Pin the lane's message ids and clock; return the (id, ns) pairs it handed out."""
    ids = (f"msg-{i}" for i in itertools.count())
    clock = (_START_NS + i * 1_000_000 for i in itertools.count())
    handed: list[tuple[str, int]] = []
    last: dict[str, int] = {}

    def next_id() -> str:
        message_id = next(ids)
        handed.append((message_id, last["ns"]))
        return message_id

    def next_ns() -> int:
        last["ns"] = next(clock)
        return last["ns"]

    monkeypatch.setattr(quick, "new_message_id", next_id)
    monkeypatch.setattr(quick, "time_ns", next_ns)
    return handed


def recorded(fake: FakeKlaviyo) -> list[tuple[Any, ...]]:
    """The events the fake holds, with their profiles' identifiers (not its random ids)."""
    return sorted(
        (
            e.unique_id,
            e.metric,
            e.time,
            e.value,
            e.value_currency,
            repr(e.properties),
            (e.profile.email, e.profile.external_id, e.profile.anonymous_ids),
        )
        for e in fake.events
    )


def _bodies(fake: FakeKlaviyo) -> list[Any]:
    return [request.body for request in fake.requests]


def _background(**options: Any) -> tuple[FakeKlaviyo, Client]:
    fake = FakeKlaviyo()
    blueprint = default_blueprint().enable("Signed Up", metric="signed_up")
    client = Client(
        PUBLIC_KEY,
        PRIVATE_KEY,
        transport=fake.transport(),
        blueprint=blueprint,
        flush_interval=60,  # one job, sealed by flush()
        **options,
    )
    return fake, client


def test_the_fast_lane_and_the_full_route_record_the_same_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Calls the lane takes, and the same calls made to take the full route, send equal jobs."""
    handed = _pinned(monkeypatch)
    lane_fake, lane = _background()
    for call in _calls():
        assert lane.track(**call).status is DeliveryStatus.QUEUED
    assert lane.flush(10)
    lane.close()
    assert len(handed) == len(_calls())  # every call took the lane

    full_fake, full = _background()
    for call, (message_id, ns) in zip(_calls(), handed, strict=True):
        # A message_id and a timestamp of the caller's own send a call down the full route.
        when = datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)
        assert full.track(**call, message_id=message_id, timestamp=when).status.value == "queued"
    assert full.flush(10)
    full.close()
    assert len(handed) == len(_calls())  # the full route made no id of its own

    assert _bodies(lane_fake) == _bodies(full_fake)
    assert len(lane_fake.events) == len(_calls())
    assert recorded(lane_fake) == recorded(full_fake)


def test_sync_and_background_record_the_same_events() -> None:
    """Sync mode's one request per event and background mode's bulk job record equal events."""
    when = datetime(2026, 12, 1, 9, 30, tzinfo=timezone.utc)
    calls = [{**call, "message_id": f"m-{i}", "timestamp": when} for i, call in enumerate(_calls())]
    background_fake, background = _background()
    for call in calls:
        background.track(**call)
    assert background.flush(10)
    background.close()

    sync_fake = FakeKlaviyo()
    sync = Client(
        PUBLIC_KEY,
        PRIVATE_KEY,
        sync_mode=True,
        transport=sync_fake.transport(),
        blueprint=default_blueprint().enable("Signed Up", metric="signed_up"),
    )
    for call in calls:
        assert sync.track(**call).status is DeliveryStatus.DELIVERED
    sync.close()

    assert len(sync_fake.events) == len(calls)
    assert recorded(sync_fake) == recorded(background_fake)
    # The event documents themselves are equal: the bulk job's events are sync's bodies
    # without their profile.
    (job,) = _bodies(background_fake)
    bulk = [
        event
        for item in job["data"]["attributes"]["events-bulk-create"]["data"]
        for event in item["attributes"]["events"]["data"]
    ]
    singles = []
    for body in _bodies(sync_fake):
        attributes = dict(body["data"]["attributes"])
        del attributes["profile"]
        singles.append({"type": "event", "attributes": attributes})
    key = lambda event: event["attributes"]["unique_id"]  # noqa: E731
    assert sorted(bulk, key=key) == sorted(singles, key=key)


def _anonymous_calls() -> list[dict[str, Any]]:
    """The common calls without their own ids: the request context gives one."""
    drop = ("user_id", "anonymous_id")
    return [{k: v for k, v in call.items() if k not in drop} for call in _calls()]


def test_a_request_contexts_consent_takes_the_lane_and_sends_what_explicit_consent_sends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inside request_context(consent=...), the lane sends the bytes of the explicit call."""
    from klaviyo_signal import request_context

    handed = _pinned(monkeypatch)
    grant = {"marketing": True, "analytics": False}
    lane_fake, lane = _background()
    with request_context(user_id="u-9", consent=grant):
        for call in _anonymous_calls():
            assert lane.track(**call).status is DeliveryStatus.QUEUED
    assert lane.flush(10)
    lane.close()
    assert len(handed) == len(_calls())  # every call took the lane

    full_fake, full = _background()
    for call, (message_id, ns) in zip(_anonymous_calls(), handed, strict=True):
        when = datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)
        full.track(**call, user_id="u-9", consent=grant, message_id=message_id, timestamp=when)
    assert full.flush(10)
    full.close()
    assert _bodies(lane_fake) == _bodies(full_fake)
    assert all(e.properties["consent"] == grant for e in lane_fake.events)


def test_a_request_context_denying_marketing_never_takes_the_lane() -> None:
    """A denial in the context drops the call with the full route's reason."""
    from klaviyo_signal import request_context

    fake, client = _background()
    with request_context(user_id="u-1", consent={"marketing": False}):
        delivery = client.track("Product Viewed", {"sku": "A"})
    assert delivery.status is DeliveryStatus.DROPPED
    assert "marketing" in (delivery.reason or "")
    client.close()
    assert not fake.requests
