"""Background identifies through Klaviyo's bulk profile import, against FakeKlaviyo."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from klaviyo_signal import Client, DeliveryStatus, RevisionWarning
from klaviyo_signal._delivery import profile_jobs
from klaviyo_signal._delivery.profile_jobs import OpenProfiles
from klaviyo_signal._klaviyo.limits import MAX_IMPORT_PROFILES, MAX_JOB_BYTES
from klaviyo_signal._klaviyo.models import Identity, Profile
from klaviyo_signal.testing import FakeKlaviyo

PUBLIC_KEY = "AbC123"
PRIVATE_KEY = "pk_test_0123456789abcdef"
JOBS = "/api/profile-bulk-import-jobs"
EVENTS = "/api/event-bulk-create-jobs"


@pytest.fixture
def fake() -> Iterator[FakeKlaviyo]:
    with FakeKlaviyo(retired=()) as running:
        yield running


def client_for(fake: FakeKlaviyo, **options: object) -> Client:
    options.setdefault("flush_interval", 0.1)
    return Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, **options)  # type: ignore[arg-type]


def test_queued_identifies_go_in_one_job_and_are_delivered_once_imported(
    fake: FakeKlaviyo,
) -> None:
    """Twenty identifies become one bulk import job, and each ends delivered once it is imported."""
    client = client_for(fake)
    deliveries = [client.identify(f"u-{i}", {"email": f"u{i}@example.com"}) for i in range(20)]
    assert client.flush(20)
    client.close()
    assert {d.wait(0).status for d in deliveries} == {DeliveryStatus.DELIVERED}
    posts = [r for r in fake.requests if r.path == JOBS]
    assert len(posts) == 1
    assert len(posts[0].body["data"]["attributes"]["profiles"]["data"]) == 20
    [job] = fake.import_jobs
    assert (job.status, job.completed_count) == ("complete", 20)
    assert fake.profile_for(external_id="u-7").email == "u7@example.com"  # type: ignore[union-attr]


def test_later_traits_of_a_person_merge_over_earlier_ones_in_call_order(fake: FakeKlaviyo) -> None:
    """Three identifies of one person make one entry: later traits win, earlier ones stay."""
    client = client_for(fake)
    client.identify("u-1", {"email": "ann@example.com", "first_name": "Ann", "plan": "free"})
    client.identify("u-1", {"first_name": "Anna", "city": "Oslo"})
    client.identify("u-1", {"plan": "pro"})
    assert client.flush(20)
    client.close()
    [post] = [r for r in fake.requests if r.path == JOBS]
    [entry] = post.body["data"]["attributes"]["profiles"]["data"]
    assert entry["attributes"]["email"] == "ann@example.com"
    assert entry["attributes"]["first_name"] == "Anna"
    assert entry["attributes"]["properties"]["plan"] == "pro"
    profile = fake.profile_for(external_id="u-1")
    assert profile is not None
    assert profile.attributes["first_name"] == "Anna"
    assert profile.properties["plan"] == "pro"


def test_an_email_change_goes_in_a_later_job_after_the_first_is_imported(
    fake: FakeKlaviyo,
) -> None:
    """Two values for one identifier are never merged: the second job waits for the first."""
    client = client_for(fake)
    client.identify("u-1", {"email": "old@example.com"})
    client.identify("u-1", {"email": "new@example.com"})
    assert client.flush(20)
    client.close()
    first, second = [i for i, r in enumerate(fake.requests) if r.path == JOBS]
    polled = [i for i, r in enumerate(fake.requests) if r.path.startswith(JOBS + "/")]
    assert first < polled[0] < second
    assert len(fake.import_jobs) == 2


def test_a_job_holds_at_most_10000_profiles_and_5_mb() -> None:
    """The open job refuses the 10,001st person and any profile that would pass 5 MB."""
    job = OpenProfiles()
    for i in range(MAX_IMPORT_PROFILES):
        assert job.add(Profile(Identity(external_id=f"u-{i}")), i, 0.0, [])
    assert job.full
    assert not job.add(Profile(Identity(external_id="one-more")), -1, 0.0, [])
    big = OpenProfiles()
    text = "x" * 90_000
    count = 0
    while big.add(Profile(Identity(external_id=f"b-{count}"), first_name=text), count, 0.0, []):
        count += 1
    assert 0 < len(big.seal().body()) <= MAX_JOB_BYTES
    assert count > 50


def test_a_profile_klaviyo_refuses_fails_only_its_call_with_klaviyos_detail(
    fake: FakeKlaviyo,
) -> None:
    """An import error fails exactly the call of that profile, with Klaviyo's words."""
    client = client_for(fake)
    good = client.identify("u-1", {"email": "ann@example.com"})
    bad = client.identify("u-2", {"email": "bob@example.c"})  # Klaviyo wants a 2-letter TLD
    short = client.identify("u-3", {"phone": "+1234567"})
    assert client.flush(20)
    client.close()
    assert good.wait(0).status is DeliveryStatus.DELIVERED
    for delivery, word in ((bad, "Invalid email address"), (short, "Invalid phone number")):
        final = delivery.wait(0)
        assert final.status is DeliveryStatus.FAILED
        assert word in (final.reason or "")
    assert client.stats.failed_by_reason.get("import error") == 2
    assert fake.profile_for(external_id="u-2") is None


def test_the_worker_polls_until_the_job_is_complete() -> None:
    """While Klaviyo processes the job the call stays queued; it is delivered once complete."""
    slow = FakeKlaviyo(retired=(), import_delay=1.5)
    with slow:
        client = client_for(slow)
        delivery = client.identify("u-1", {"email": "ann@example.com"})
        assert delivery.wait(timeout=1.0).status is DeliveryStatus.QUEUED
        assert delivery.wait(timeout=20).status is DeliveryStatus.DELIVERED
        client.close()
        polls = [r for r in slow.requests if r.method == "GET"]
        assert len(polls) >= 2
        assert all(r.status == 200 for r in polls)


def test_an_event_after_an_identify_waits_for_its_import() -> None:
    """An event queued after a person's identify reaches Klaviyo only once that job is imported."""
    slow = FakeKlaviyo(retired=(), import_delay=1.0)
    with slow:
        client = client_for(slow)
        client.identify("u-1", {"email": "ann@example.com"})
        order = client.track("Order Completed", {"total": 5}, user_id="u-1")
        other = client.track("Order Completed", {"total": 6}, user_id="u-9")
        assert order.wait(timeout=20).status is DeliveryStatus.DELIVERED
        assert other.wait(timeout=5).status is DeliveryStatus.DELIVERED
        client.close()
        [job] = slow.import_jobs
        events = [i for i, r in enumerate(slow.requests) if r.path == EVENTS]
        assert job.completed_index is not None
        assert min(events) >= job.completed_index
        [event] = slow.events_for(external_id="u-1")
        assert event.profile.email == "ann@example.com"


def test_a_key_without_lists_write_falls_back_to_profile_import(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 403 on bulk import sends the identifies through profile-import, logged once, none lost."""
    with FakeKlaviyo(retired=(), scopes=["events:write", "profiles:write"]) as fake:
        client = client_for(fake)
        with caplog.at_level(logging.WARNING, logger="klaviyo_signal"):
            first = [client.identify(f"u-{i}", {"email": f"u{i}@example.com"}) for i in range(3)]
            assert client.flush(20)
            later = client.identify("u-9", {"email": "late@example.com"})
            assert client.flush(20)
        client.close()
        assert {d.wait(0).status for d in [*first, later]} == {DeliveryStatus.DELIVERED}
        paths = [(r.path, r.status) for r in fake.requests]
        assert paths[0] == (JOBS, 403)
        assert [p for p in paths[1:] if p[0] == JOBS] == []
        assert len([p for p in paths if p[0] == "/api/profile-import"]) == 4
        assert len(fake.profiles) == 4
        logged = [r for r in caplog.records if "falls back" in r.getMessage()]
        assert len(logged) == 1
        assert "lists:write" in logged[0].getMessage()


def test_a_job_never_imported_within_the_bound_fails_its_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job Klaviyo does not finish within the bound ends its calls failed, saying so."""
    monkeypatch.setattr(profile_jobs, "IMPORT_TIMEOUT", 1.0)
    with FakeKlaviyo(retired=(), import_delay=60) as fake:
        client = client_for(fake)
        delivery = client.identify("u-1", {"email": "ann@example.com"})
        final = delivery.wait(timeout=20)
        client.close()
    assert final.status is DeliveryStatus.FAILED
    assert "had not imported it" in (final.reason or "")


def test_sync_mode_keeps_profile_import(fake: FakeKlaviyo) -> None:
    """In sync mode an identify is one profile-import request with its own answer."""
    client = client_for(fake, sync_mode=True)
    assert client.identify("u-1", {"email": "ann@example.com"}).status is DeliveryStatus.DELIVERED
    client.close()
    assert [r.path for r in fake.requests] == ["/api/profile-import"]


def test_a_revision_without_the_bulk_schema_keeps_profile_import(fake: FakeKlaviyo) -> None:
    """Under 2025-07-15 (no bulk import schema shipped here) identifies use profile-import."""
    with pytest.warns(RevisionWarning):
        client = client_for(fake, revision="2025-07-15")
    client.identify("u-1", {"email": "ann@example.com"})
    assert client.flush(20)
    client.close()
    assert [r.path for r in fake.requests] == ["/api/profile-import"]


def test_import_errors_are_read_page_by_page(fake: FakeKlaviyo) -> None:
    """More import errors than one page holds: every refused call fails, the others deliver."""
    client = client_for(fake)
    bad = [client.identify(f"b-{i}", {"email": f"b{i}@example.c"}) for i in range(130)]
    good = client.identify("g-1", {"email": "good@example.com"})
    assert client.flush(30)
    client.close()
    assert {d.wait(0).status for d in bad} == {DeliveryStatus.FAILED}
    assert good.wait(0).status is DeliveryStatus.DELIVERED
    pages = [r for r in fake.requests if "/import-errors" in r.path]
    assert len(pages) == 2
    assert all(r.status == 200 for r in pages)


def test_a_400_naming_one_profile_fails_its_call_and_sends_the_rest_again(
    fake: FakeKlaviyo,
) -> None:
    """A refused job whose error points at one entry fails that call alone; the rest go again."""
    pointer = "/data/attributes/profiles/data/1/attributes/email"
    error = {"status": 400, "code": "invalid", "title": "Invalid input.", "detail": "No."}
    fake.fail_next(400, body={"errors": [{**error, "source": {"pointer": pointer}}]})
    client = client_for(fake)
    calls = [client.identify(f"u-{i}", {"email": f"u{i}@example.com"}) for i in range(3)]
    assert client.flush(20)
    client.close()
    assert [d.wait(0).status for d in calls] == [
        DeliveryStatus.DELIVERED,
        DeliveryStatus.FAILED,
        DeliveryStatus.DELIVERED,
    ]
    assert calls[1].wait(0).reason == "No."
    resent = [r for r in fake.requests if r.path == JOBS][1]
    assert len(resent.body["data"]["attributes"]["profiles"]["data"]) == 2


def test_a_key_that_cannot_read_jobs_falls_back_too() -> None:
    """A 403 on the job's poll (no lists:read) resends its calls through profile-import."""
    scopes = ["events:write", "profiles:write", "lists:write"]
    with FakeKlaviyo(retired=(), scopes=scopes) as fake:
        client = client_for(fake)
        delivery = client.identify("u-1", {"email": "ann@example.com"})
        assert delivery.wait(timeout=20).status is DeliveryStatus.DELIVERED
        client.close()
        statuses = [(r.method, r.path.split("/")[2], r.status) for r in fake.requests]
    assert statuses == [
        ("POST", "profile-bulk-import-jobs", 202),
        ("GET", "profile-bulk-import-jobs", 403),
        ("POST", "profile-import", 200),  # the job had imported it: an update
    ]


def test_a_job_still_importing_at_shutdown_ends_failed_saying_it_is_likely_imported() -> None:
    """close() before Klaviyo finished a job ends its calls failed, not dropped, and says why."""
    with FakeKlaviyo(retired=(), import_delay=60) as fake:
        client = client_for(fake, shutdown_timeout=1.0)
        delivery = client.identify("u-1", {"email": "ann@example.com"})
        client.close()
        final = delivery.wait(0)
        assert fake.import_jobs[0].status != "complete"
    assert final.status is DeliveryStatus.FAILED
    assert "likely imported" in (final.reason or "")
