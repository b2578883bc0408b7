"""Background delivery as bulk jobs: sizes, grouping by profile, flush triggers, ordering."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone

from klaviyo_signal import Client, DeliveryStatus, default_blueprint
from klaviyo_signal._delivery.jobs import OpenJob, encode_event
from klaviyo_signal._klaviyo.limits import MAX_JOB_BYTES, MAX_JOB_EVENTS
from klaviyo_signal._klaviyo.models import Event, Identity, Profile
from klaviyo_signal.testing import FakeKlaviyo
from tests.conftest import (
    PRIVATE_KEY,
    PUBLIC_KEY,
    assert_valid,
    close_and_check_middle_refused,
    refuse_item,
)

BULK = "/api/event-bulk-create-jobs"
BLUEPRINT = default_blueprint().enable("Signed Up")


def client_for(fake: FakeKlaviyo, **options: object) -> Client:
    options.setdefault("flush_interval", 60.0)
    options.setdefault("max_queue_size", 100_000)
    return Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, blueprint=BLUEPRINT, **options)  # type: ignore[arg-type]


def bulk_bodies(fake: FakeKlaviyo) -> list[dict[str, object]]:
    """Every bulk body the fake got, each checked against Klaviyo's schema and answered 202."""
    bodies = []
    for request in fake.requests:
        if request.path == BULK:
            assert request.status == 202
            assert_valid(BULK, request.body)
            bodies.append(request.body)
    return bodies


def items(body: object) -> list[dict[str, object]]:
    found: list[dict[str, object]] = body["data"]["attributes"]["events-bulk-create"]["data"]  # type: ignore[index]
    return found


def event_count(body: object) -> int:
    return sum(len(item["attributes"]["events"]["data"]) for item in items(body))  # type: ignore[index]


def test_jobs_hold_at_most_1000_events(fake: FakeKlaviyo) -> None:
    """2,500 queued events go out as three schema-valid bulk jobs of at most 1,000 events."""
    client = client_for(fake)
    for i in range(2500):
        client.track("Signed Up", {"n": i}, user_id=f"user-{i % 40}")
    assert client.flush(timeout=60)
    client.close()
    bodies = bulk_bodies(fake)
    assert [event_count(b) for b in bodies] == [1000, 1000, 500]
    assert len(fake.events) == 2500
    assert client.stats.delivered == 2500


def test_events_are_grouped_by_profile(fake: FakeKlaviyo) -> None:
    """Events of one profile share one item; each item carries that profile's events only."""
    client = client_for(fake)
    for i in range(12):
        client.track("Signed Up", {"n": i}, user_id=f"user-{i % 3}")
    client.close()
    [body] = bulk_bodies(fake)
    groups = {
        item["attributes"]["profile"]["data"]["attributes"]["external_id"]: [  # type: ignore[index]
            e["attributes"]["properties"]["n"]
            for e in item["attributes"]["events"]["data"]  # type: ignore[index]
        ]
        for item in items(body)
    }
    assert groups == {
        "user-0": [0, 3, 6, 9],
        "user-1": [1, 4, 7, 10],
        "user-2": [2, 5, 8, 11],
    }


def test_jobs_stay_under_5_mb(fake: FakeKlaviyo) -> None:
    """Events with big properties are split so that every job's body is under 5 MB."""
    client = client_for(fake)
    blob = "x" * 90_000
    for i in range(80):
        client.track("Signed Up", {"blob": blob, "n": i}, user_id=f"user-{i}")
    client.close()
    sizes = [
        len(r.body and json.dumps(r.body, separators=(",", ":")).encode()) for r in fake.requests
    ]
    bodies = bulk_bodies(fake)
    assert len(bodies) >= 2
    assert all(size < 5_000_000 for size in sizes)
    assert sum(event_count(b) for b in bodies) == 80
    assert len(fake.events) == 80


def _event(i: int, props: dict[str, object] | None = None) -> Event:
    return Event(
        metric="m",
        profile=Profile(Identity(external_id=f"user-{i % 7}")),
        properties=props or {"n": i},
        time=datetime(2024, 5, 1, tzinfo=timezone.utc),
        unique_id=f"id-{i}",
    )


def test_open_job_knows_its_exact_size() -> None:
    """The size the batcher tracks is the length of the body it writes, and valid JSON."""
    job = OpenJob()
    for i in range(300):
        event = _event(i, {"n": i, "text": "é" * (i % 13)})
        assert job.add(encode_event(event), event.profile, object(), 0.0)
    size = job.size
    body = job.seal().body()
    assert len(body) == size <= MAX_JOB_BYTES
    assert_valid(BULK, json.loads(body))


def test_open_job_refuses_the_1001st_event() -> None:
    """An open job takes 1,000 events and refuses the next one without changing."""
    job = OpenJob()
    for i in range(MAX_JOB_EVENTS):
        event = _event(i)
        assert job.add(encode_event(event), event.profile, object(), 0.0)
    event = _event(MAX_JOB_EVENTS)
    assert not job.add(encode_event(event), event.profile, object(), 0.0)
    assert len(job) == MAX_JOB_EVENTS


def test_interval_flush_sends_without_flush_call(fake: FakeKlaviyo) -> None:
    """A lone event goes out once it is flush_interval old, with no flush() call."""
    client = client_for(fake, flush_interval=0.2)
    delivery = client.track("Signed Up", user_id="user-1")
    final = delivery.wait(timeout=20)
    assert final.status is DeliveryStatus.DELIVERED
    assert final.http_status == 202
    assert len(fake.events) == 1
    client.close()


def test_identify_goes_before_later_events_of_the_profile(fake: FakeKlaviyo) -> None:
    """An identify is sent after the profile's earlier events and imported before its later ones."""
    client = client_for(fake)
    client.track("Signed Up", {"n": 1}, user_id="user-1")
    client.identify("user-1", {"email": "ann@example.com"})
    client.track("Signed Up", {"n": 2}, user_id="user-1")
    client.close()
    paths = [r.path for r in fake.requests]
    jobs = "/api/profile-bulk-import-jobs"
    # The later event goes once Klaviyo has imported the identify's job (polled).
    assert paths == [BULK, jobs, f"{jobs}/{fake.import_jobs[0].id}", BULK]
    assert all(r.status in (200, 201, 202) for r in fake.requests)
    assert fake.profile_for(external_id="user-1").email == "ann@example.com"  # type: ignore[union-attr]


def test_partial_400_fails_only_the_named_item(fake: FakeKlaviyo) -> None:
    """A 400 naming one item fails only its calls, with Klaviyo's detail; the rest is resent."""
    pointer = "/data/attributes/events-bulk-create/data/1/attributes/profile"
    refuse_item(fake, pointer, "This profile is suppressed.")
    client = client_for(fake)
    calls = [client.track("Signed Up", {"n": i}, user_id=f"user-{i}") for i in range(3)]
    close_and_check_middle_refused(client, calls, "This profile is suppressed.")
    assert sorted(e.profile.external_id or "" for e in fake.events) == ["user-0", "user-2"]
    assert [r.status for r in fake.requests] == [400, 202]
    assert client.stats.failed_by_reason == {"HTTP 400": 1}


def test_400_without_item_pointer_fails_the_batch(fake: FakeKlaviyo) -> None:
    """A 400 that names no item fails every call of the job."""
    fake.fail_next(400)
    client = client_for(fake)
    calls = [client.track("Signed Up", user_id=f"user-{i}") for i in range(3)]
    client.close()
    assert {c.wait(timeout=10).status for c in calls} == {DeliveryStatus.FAILED}
    assert len(fake.requests) == 1


def test_worker_encodes_off_the_callers_thread(fake: FakeKlaviyo) -> None:
    """A queued call is not yet bytes: it is encoded later, so the call returns at once."""
    client = client_for(fake)
    started = time.perf_counter()
    delivery = client.track("Signed Up", {"n": 1}, user_id="user-1")
    assert time.perf_counter() - started < 1.0
    assert delivery.status is DeliveryStatus.QUEUED
    assert fake.requests == []
    client.close()
    assert delivery.wait(timeout=10).status is DeliveryStatus.DELIVERED


def test_partial_400_naming_one_event_fails_only_its_call(fake: FakeKlaviyo) -> None:
    """A 400 naming one event of a profile's item fails only that call; its siblings are resent."""
    pointer = "/data/attributes/events-bulk-create/data/0/attributes/events/data/1/attributes/time"
    detail = "The event time must be after the year 2000 and at most 1 year in the future."
    refuse_item(fake, pointer, detail)
    client = client_for(fake)
    # Text that looks like JSON punctuation must not confuse where one event ends.
    note = 'a,"b"},{"c": [1, 2]'
    calls = [client.track("Signed Up", {"n": i, "note": note}, user_id="user-1") for i in range(3)]
    close_and_check_middle_refused(client, calls, detail)
    assert sorted(e.properties["n"] for e in fake.events) == [0, 2]
    assert {e.properties["note"] for e in fake.events} == {note}
    assert [r.status for r in fake.requests] == [400, 202]
    resent = fake.requests[1].body
    assert_valid(BULK, resent)
    assert event_count(resent) == 2
    assert client.stats.failed_by_reason == {"HTTP 400": 1}


def test_flush_under_steady_traffic_returns_and_keeps_jobs_full(fake: FakeKlaviyo) -> None:
    """flush() waits only for the calls queued before it and seals their job once, not every job."""
    client = client_for(fake, rate_limits=None)
    stop = threading.Event()
    sent = [0]

    def produce() -> None:
        deadline = time.monotonic() + 30  # a hard cap, should the flush never return
        while not stop.is_set() and time.monotonic() < deadline:
            client.track("Signed Up", {"n": sent[0]}, user_id=f"user-{sent[0] % 50}")
            sent[0] += 1
            time.sleep(0.0005)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        time.sleep(0.5)
        before = sent[0]
        started = time.monotonic()
        assert client.flush(timeout=10)
        assert time.monotonic() - started < 8
        flushed_at = sent[0]
        # Everything queued before flush() is final by now.
        assert len(fake.events) >= before
        time.sleep(1.0)  # the traffic goes on after the flush
    finally:
        stop.set()
        producer.join()
    client.close()
    assert sent[0] > flushed_at
    counts = [event_count(b) for b in bulk_bodies(fake)]
    assert sum(counts) == sent[0] == len(fake.events)
    # Full jobs, plus one sealed by the flush and the last one by close().
    assert len(counts) <= sent[0] // MAX_JOB_EVENTS + 3, counts
