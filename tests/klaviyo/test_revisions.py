"""Klaviyo API revisions: each supported one's rules, its lifecycle, and bodies valid under it."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from datetime import date
from importlib import resources
from typing import Any

import pytest
import requests

import klaviyo_signal
from klaviyo_signal import (
    DEFAULT_REVISION,
    SUPPORTED_REVISIONS,
    Blueprint,
    Client,
    ConfigurationError,
    DeliveryStatus,
    RevisionGoneError,
    RevisionWarning,
    ValidationError,
    default_blueprint,
)
from klaviyo_signal._klaviyo.revisions import FALL_FORWARD_OPT_OUT, OPERATIONS, revision
from klaviyo_signal.testing import FakeKlaviyo
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY, assert_valid

OLD = "2024-10-15"
NEW = "2026-07-15"
TODAY = date(2026, 12, 6)


def client(fake: FakeKlaviyo, revision_name: str, *, sync: bool, **options: Any) -> Client:
    options.setdefault("flush_interval", 0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RevisionWarning)
        return Client(
            PUBLIC_KEY,
            PRIVATE_KEY,
            base_url=fake.url,
            revision=revision_name,
            sync_mode=sync,
            **options,
        )


def checked_requests(fake: FakeKlaviyo, served_as: str | None = None) -> list[Any]:
    """Every request the fake took, each body checked against the schema of the revision it
    names (and of the one a retired revision is served as)."""
    taken = [r for r in fake.requests if r.status in (200, 201, 202)]
    for request in taken:
        assert_valid(request.path, request.body, request.headers["revision"])
        if served_as is not None:
            assert_valid(request.path, request.body, served_as)
    return taken


@pytest.fixture
def fake() -> Iterator[FakeKlaviyo]:
    with FakeKlaviyo(retired=()) as running:
        yield running


# --- the revisions as data --------------------------------------------------------------------


@pytest.mark.parametrize("name", SUPPORTED_REVISIONS)
def test_each_revisions_facts_are_read_off_its_official_schemas(name: str) -> None:
    """Every rule a Revision states agrees with that revision's shipped Klaviyo schemas."""
    rev = revision(name)
    profile = rev.schema("profile_import")["properties"]["data"]["properties"]["attributes"]
    event = rev.schema("event_create")["properties"]["data"]["properties"]["attributes"]
    subscribe = rev.schema("subscription_bulk_create_job")["properties"]["data"]["properties"]
    profiles = subscribe["attributes"]["properties"]["profiles"]["properties"]["data"]["items"]
    bulk = json.dumps(rev.schema("event_bulk_create_job"))
    assert rev.profile_import_anonymous_id == ("anonymous_id" in profile["properties"])
    assert rev.backfill == ("backfill" in event["properties"])
    assert rev.subscriptions_required == (
        "subscriptions" in profiles["properties"]["attributes"].get("required", [])
    )
    assert rev.unique_id_repeat_fails_job == ("the request will fail" in bulk)
    year = re.search(r"after the year (\d{4})", event["properties"]["time"]["description"])
    assert year is not None
    assert rev.earliest_event_year == int(year.group(1))
    most = re.search(r"exceed (\d+) properties", event["properties"]["properties"]["description"])
    assert rev.max_event_properties == (int(most.group(1)) if most else 300)
    for operation in OPERATIONS.values():
        if rev.has(operation):
            assert rev.schema(operation)["type"] == "object"


def test_the_default_is_the_newest_supported_revision() -> None:
    """DEFAULT_REVISION is 2026-07-15 and both the guide's and the newest revision are supported."""
    assert DEFAULT_REVISION == NEW == SUPPORTED_REVISIONS[-1]
    assert OLD in SUPPORTED_REVISIONS
    assert klaviyo_signal.DEFAULT_REVISION == DEFAULT_REVISION
    c = Client(PUBLIC_KEY, PRIVATE_KEY)
    assert c.explain("track", "Order Completed", user_id="u").requests[0].headers["revision"] == NEW
    c.close()


@pytest.mark.parametrize("name", ["2026-01-15", "2023-02-22", "latest", "", 20240101])
def test_a_revision_without_schemas_is_refused_naming_the_supported_ones(name: object) -> None:
    """A revision the package has no schemas for raises ConfigurationError listing the others."""
    with pytest.raises(ConfigurationError) as caught:
        Client(PUBLIC_KEY, PRIVATE_KEY, revision=name)  # type: ignore[arg-type]
    text = str(caught.value)
    assert text.startswith("revision:")
    assert all(supported in text for supported in SUPPORTED_REVISIONS)


def test_the_lifecycle_follows_klaviyos_policy() -> None:
    """Stable a year, deprecated the second, then retired and served as the oldest live one."""
    old = revision(OLD).status(TODAY)
    assert (old.state, old.since, old.served_as) == ("retired", date(2026, 10, 15), "2025-01-15")
    middle = revision("2025-01-15").status(TODAY)
    assert (middle.state, middle.since, middle.served_as) == (
        "deprecated",
        date(2026, 1, 15),
        "2025-01-15",
    )
    assert revision(NEW).status(TODAY).state == "stable"
    later = revision("2025-01-15").status(date(2027, 1, 15))
    assert (later.state, later.served_as) == ("retired", "2025-04-15")


def test_a_retired_revision_warns_with_what_klaviyo_serves_and_what_to_pass() -> None:
    """Building a Client with 2024-10-15 warns RevisionWarning: retired since, served as, pass."""
    with pytest.warns(RevisionWarning) as caught:
        Client(PUBLIC_KEY, PRIVATE_KEY, revision=OLD).close()
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "2024-10-15" in text
    assert "2026-10-15" in text
    assert "2025-01-15" in text
    assert f"revision={NEW!r}" in text
    assert issubclass(RevisionWarning, UserWarning)
    assert caught[0].filename == __file__  # points at the caller's line


def test_a_supported_revision_builds_quietly() -> None:
    """A stable revision gives no warning at all."""
    assert revision(DEFAULT_REVISION).status().state == "stable"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Client(PUBLIC_KEY, PRIVATE_KEY).close()


def test_strict_revision_turns_a_retired_revision_into_a_410_that_says_what_to_do() -> None:
    """strict_revision sends the fall-forward opt-out, so Klaviyo answers 410, explained."""
    with FakeKlaviyo(retired=[OLD]) as fake:
        strict = client(fake, OLD, sync=True, strict_revision=True)
        with pytest.raises(RevisionGoneError) as caught:
            strict.track("Order Completed", {"revenue": 1}, user_id="u-1")
        assert fake.requests[0].headers[FALL_FORWARD_OPT_OUT.lower()] == "1"
        text = str(caught.value)
        assert "HTTP 410" in text
        assert "retired" in text
        assert f"revision={NEW!r}" in text
        # Without the opt-out the same request is served under the oldest live revision.
        lenient = client(fake, OLD, sync=True)
        assert lenient.track("Order Completed", {"revenue": 1}, user_id="u-1").status is (
            DeliveryStatus.DELIVERED
        )
        assert FALL_FORWARD_OPT_OUT.lower() not in fake.requests[1].headers


# --- identity stitching under each revision ------------------------------------------------


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "background"])
@pytest.mark.parametrize("revision_name", [OLD, NEW])
def test_an_anonymous_visit_stitches_into_the_known_profile(revision_name: str, sync: bool) -> None:
    """Page views by anonymous_id, identify with both ids, then events by user_id: one profile."""
    # Under 2024-10-15 Klaviyo today serves the requests as 2025-01-15: test that too.
    retired = [OLD] if revision_name == OLD else []
    with FakeKlaviyo(retired=retired) as fake:
        c = client(fake, revision_name, sync=sync)
        c.page("Home", {"url": "https://shop.example/"}, anonymous_id="anon-1")
        c.page("Pricing", {"url": "https://shop.example/pricing"}, anonymous_id="anon-1")
        c.identify("user-1", {"email": "jane@example.com", "plan": "pro"}, anonymous_id="anon-1")
        c.track("Order Completed", {"revenue": 9.5, "currency": "EUR"}, user_id="user-1")
        assert c.flush(10)
        c.close()
        [profile] = fake.profiles
        assert (profile.email, profile.external_id) == ("jane@example.com", "user-1")
        assert profile.anonymous_ids == ("anon-1",)
        assert profile.properties == {"plan": "pro"}
        assert sorted(e.metric for e in fake.events) == ["page_view", "page_view", "purchase"]
        taken = checked_requests(fake, served_as="2025-01-15" if revision_name == OLD else None)
        # Background identifies go in a bulk profile import job, sync ones to profile-import.
        imports = [
            r.body if sync else {"data": r.body["data"]["attributes"]["profiles"]["data"][0]}
            for r in taken
            if r.path == ("/api/profile-import" if sync else "/api/profile-bulk-import-jobs")
        ]
        links = [r for r in taken if r.path.startswith("/client/")]
        assert len(imports) == 1
        if revision_name == NEW:
            assert "anonymous_id" not in imports[0]["data"]["attributes"]
            [link] = links
            assert link.path == f"/client/profiles?company_id={PUBLIC_KEY}"
            assert "authorization" not in link.headers  # never the private key
            assert link.body["data"]["attributes"] == {
                "email": "jane@example.com",
                "external_id": "user-1",
                "anonymous_id": "anon-1",
            }
        else:
            assert imports[0]["data"]["attributes"]["anonymous_id"] == "anon-1"
            assert links == []


def test_an_identify_by_anonymous_id_alone_goes_to_the_client_side_endpoint(
    fake: FakeKlaviyo,
) -> None:
    """Under 2026-07-15 a profile known only by its anonymous id goes whole to /client/profiles."""
    c = client(fake, NEW, sync=True)
    delivery = c.identify(traits={"first_name": "Ann"}, anonymous_id="anon-9")
    assert delivery.status is DeliveryStatus.DELIVERED
    [request] = checked_requests(fake)
    assert request.path.startswith("/client/profiles?")
    assert request.body["data"]["attributes"] == {"anonymous_id": "anon-9", "first_name": "Ann"}
    [profile] = fake.profiles
    assert (profile.anonymous_ids, profile.attributes) == (("anon-9",), {"first_name": "Ann"})


def test_the_fake_refuses_anonymous_id_on_profile_import_under_2026(fake: FakeKlaviyo) -> None:
    """FakeKlaviyo answers 400 naming anonymous_id on a profile-import under 2026-07-15."""
    body = {"data": {"type": "profile", "attributes": {"email": "a@x.io", "anonymous_id": "a"}}}
    headers = {"Authorization": f"Klaviyo-API-Key {PRIVATE_KEY}", "revision": NEW}
    response = requests.post(f"{fake.url}/api/profile-import", json=body, headers=headers)
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert "'anonymous_id' is not a valid field" in error["detail"]
    assert error["source"]["pointer"] == "/data/attributes/anonymous_id"
    old = requests.post(
        f"{fake.url}/api/profile-import", json=body, headers={**headers, "revision": OLD}
    )
    assert old.status_code == 201


def test_the_fake_serves_a_retired_revision_as_the_oldest_live_one() -> None:
    """A retired revision is served with the next one's rules, or 410 when it opts out."""
    body = {
        "data": {
            "type": "profile-subscription-bulk-create-job",
            "attributes": {
                "profiles": {"data": [{"type": "profile", "attributes": {"email": "a@x.io"}}]}
            },
        }
    }
    headers = {"Authorization": f"Klaviyo-API-Key {PRIVATE_KEY}", "revision": OLD}
    path = "/api/profile-subscription-bulk-create-jobs"
    with FakeKlaviyo(retired=()) as served:
        assert requests.post(served.url + path, json=body, headers=headers).status_code == 202
    with FakeKlaviyo(retired=[OLD]) as fake:
        assert fake.served_as == "2025-01-15"
        fallen = requests.post(fake.url + path, json=body, headers=headers)
        assert fallen.status_code == 400  # 2025-01-15 requires `subscriptions`
        assert "subscriptions" in fallen.text
        opted = requests.post(
            fake.url + path, json=body, headers={**headers, FALL_FORWARD_OPT_OUT: "1"}
        )
        assert opted.status_code == 410
        unknown = requests.post(
            fake.url + path, json=body, headers={**headers, "revision": "2023-01-01"}
        )
        assert unknown.status_code == 400
        assert "revision" in unknown.json()["errors"][0]["source"]["parameter"]


def test_the_fake_knows_which_revisions_are_retired_today() -> None:
    """By default FakeKlaviyo retires what Klaviyo has retired by today's date."""
    with FakeKlaviyo() as fake:
        assert fake.served_as == min(
            r for r in SUPPORTED_REVISIONS if revision(r).status().state != "retired"
        )
    with pytest.raises(ValueError, match="not served"):
        FakeKlaviyo(retired=["2019-01-01"])


def test_subscription_jobs_carry_subscriptions_under_every_revision(fake: FakeKlaviyo) -> None:
    """Each subscribe and unsubscribe body names its channels, as 2025-01-15 on requires."""
    for name in SUPPORTED_REVISIONS:
        c = client(fake, name, sync=True)
        c.subscribe(email="a@x.io", list_id="L1")
        c.unsubscribe(phone="+15005550006")
    for request in checked_requests(fake):
        for profile in request.body["data"]["attributes"]["profiles"]["data"]:
            assert profile["attributes"]["subscriptions"]


# --- flow-safe backfills ---------------------------------------------------------------------


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "background"])
def test_backfill_is_on_the_wire_and_recorded(fake: FakeKlaviyo, sync: bool) -> None:
    """track/page(backfill=True) send backfill: true; other events carry none."""
    c = client(fake, NEW, sync=sync)
    c.track("Order Completed", {"revenue": 5}, user_id="u-1", backfill=True)
    c.page("Home", user_id="u-1", backfill=True)
    c.track("Product Viewed", {"sku": "s"}, user_id="u-1")
    assert c.flush(10)
    c.close()
    by_metric = {e.metric: e.backfill for e in fake.events}
    assert by_metric == {"purchase": True, "page_view": True, "product_viewed": False}
    bodies = json.dumps([r.body for r in checked_requests(fake)])
    assert bodies.count('"backfill": true') == 2


def test_a_client_wide_backfill_can_be_turned_off_per_call(fake: FakeKlaviyo) -> None:
    """Client(backfill=True) marks every event; backfill=False on a call sends it live."""
    c = client(fake, NEW, sync=True, backfill=True)
    c.track("Order Completed", {"revenue": 5}, user_id="u-1", message_id="m-1")
    c.track("Order Completed", {"revenue": 6}, user_id="u-1", message_id="m-2", backfill=False)
    assert [e.backfill for e in fake.events] == [True, False]
    explained = c.explain("page", "Home", user_id="u-1")
    assert explained.requests[0].body["data"]["attributes"]["backfill"] is True


def test_backfill_under_a_revision_without_it_is_refused() -> None:
    """backfill=True under 2024-10-15 raises ValidationError (ConfigurationError on the Client)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RevisionWarning)
        old = Client(PUBLIC_KEY, PRIVATE_KEY, revision=OLD, sync_mode=True)
        with pytest.raises(ValidationError, match="backfill: revision 2024-10-15"):
            old.track("Order Completed", {"revenue": 1}, user_id="u-1", backfill=True)
        with pytest.raises(ValidationError, match=NEW):
            old.page("Home", user_id="u-1", backfill=True)
        with pytest.raises(ConfigurationError, match="backfill"):
            Client(PUBLIC_KEY, PRIVATE_KEY, revision=OLD, backfill=True)
    with pytest.raises(ValidationError, match="backfill: must be True or False"):
        Client(PUBLIC_KEY, PRIVATE_KEY).track("Home", user_id="u", backfill="yes")  # type: ignore[arg-type]


# --- no job Klaviyo would refuse whole ------------------------------------------------------


def test_a_repeated_message_id_is_dropped_while_the_first_is_queued(fake: FakeKlaviyo) -> None:
    """A call with a queued call's message_id ends dropped, naming the duplicate."""
    c = client(fake, NEW, sync=False, flush_interval=30)
    first = c.track("Order Completed", {"revenue": 1}, user_id="u-1", message_id="order-7")
    again = c.track("Order Completed", {"revenue": 1}, user_id="u-1", message_id="order-7")
    assert first.status is DeliveryStatus.QUEUED
    assert again.status is DeliveryStatus.DROPPED
    assert again.reason is not None
    assert "order-7" in again.reason
    assert "already queued" in again.reason
    assert c.stats.dropped_by_reason == {"duplicate": 1}
    assert c.flush(10)
    # Once the first is final, the id may be sent again (Klaviyo keeps one record of it).
    later = c.track("Order Completed", {"revenue": 1}, user_id="u-1", message_id="order-7")
    assert later.status is DeliveryStatus.QUEUED
    assert c.flush(10)
    c.close()
    assert [e.unique_id for e in fake.events] == ["order-7"]


def test_a_bulk_job_never_repeats_a_unique_id_for_a_metric(fake: FakeKlaviyo) -> None:
    """Events sharing a blueprint-chosen unique_id go in separate jobs, so no job fails whole."""
    base = default_blueprint().to_dict()
    base["rules"]["Order Completed"]["unique_id"] = "properties.order_id"
    blueprint = Blueprint.from_dict(base)
    c = client(fake, NEW, sync=False, blueprint=blueprint, flush_interval=30)
    for n in range(3):
        c.track("Order Completed", {"order_id": "o-1", "revenue": n}, user_id="u-1")
    c.track("Order Completed", {"order_id": "o-2", "revenue": 9}, user_id="u-1")
    assert c.flush(10)
    c.close()
    jobs = [r for r in checked_requests(fake) if r.path == "/api/event-bulk-create-jobs"]
    assert len(jobs) == 3
    for job in jobs:
        ids = [
            e["attributes"]["unique_id"]
            for item in job.body["data"]["attributes"]["events-bulk-create"]["data"]
            for e in item["attributes"]["events"]["data"]
        ]
        assert len(ids) == len(set(ids))
    assert sorted(e.unique_id for e in fake.events) == ["o-1", "o-2"]
    assert c.stats.delivered == 4


def test_the_fake_refuses_a_job_that_repeats_a_unique_id_since_2025(fake: FakeKlaviyo) -> None:
    """Under 2026-07-15 a job with one unique_id twice for a profile and metric is a 400."""
    event = {
        "type": "event",
        "attributes": {
            "properties": {},
            "unique_id": "same",
            "metric": {"data": {"type": "metric", "attributes": {"name": "m"}}},
        },
    }
    item = {
        "type": "event-bulk-create",
        "attributes": {
            "profile": {"data": {"type": "profile", "attributes": {"email": "a@x.io"}}},
            "events": {"data": [event, event]},
        },
    }
    body = {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {"events-bulk-create": {"data": [item]}},
        }
    }
    headers = {"Authorization": f"Klaviyo-API-Key {PRIVATE_KEY}", "revision": NEW}
    path = fake.url + "/api/event-bulk-create-jobs"
    refused = requests.post(path, json=body, headers=headers)
    assert refused.status_code == 400
    assert "repeated" in refused.json()["errors"][0]["detail"]
    assert fake.events == []
    assert requests.post(path, json=body, headers={**headers, "revision": OLD}).status_code == 202
    assert len(fake.events) == 1


def test_rate_limits_are_the_revisions_own() -> None:
    """The client paces profile-import at 750/min under 2026-07-15 and 700/min under 2024-10-15."""
    new = Client(PUBLIC_KEY, PRIVATE_KEY)
    assert new._config.rate_limits is not None
    assert new._config.rate_limits["POST /api/profile-import"] == (75, 750)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RevisionWarning)
        old = Client(PUBLIC_KEY, PRIVATE_KEY, revision=OLD)
    assert old._config.rate_limits is not None
    assert old._config.rate_limits["POST /api/profile-import"] == (75, 700)


def test_the_import_waits_for_its_link_even_after_earlier_events(fake: FakeKlaviyo) -> None:
    """In background mode a paced link holds its profile import back, whatever came before."""
    # One link a second: the second identify's link must wait, and so must its import.
    limits = {"POST /client/profiles": (1, 100)}
    c = client(fake, NEW, sync=False, flush_interval=30, rate_limits=limits)
    c.identify("u-0", {"email": "first@example.com"}, anonymous_id="anon-0")
    assert c.flush(15)
    c.page("Home", user_id="u-1")  # an earlier event job of the same person
    c.identify("u-1", {"email": "jane@example.com"}, anonymous_id="anon-1")
    assert c.flush(15)
    c.close()
    sent = [(r.path.partition("?")[0], r.body) for r in fake.requests]
    link = next(
        i
        for i, (path, body) in enumerate(sent)
        if path == "/client/profiles" and body["data"]["attributes"].get("external_id") == "u-1"
    )
    imported = next(
        i
        for i, (path, body) in enumerate(sent)
        if path == "/api/profile-bulk-import-jobs"
        and body["data"]["attributes"]["profiles"]["data"][0]["attributes"]["external_id"] == "u-1"
    )
    assert link < imported, sent


def test_the_client_side_endpoint_counts_only_its_documented_202() -> None:
    """A 200 from something in front of /client/profiles is not Klaviyo's answer."""
    from klaviyo_signal._klaviyo.operations import success_statuses

    assert success_statuses("POST /client/profiles") == frozenset({202})


@pytest.mark.parametrize("name", SUPPORTED_REVISIONS)
def test_bulk_profile_import_limits_are_its_schemas_own(name: str) -> None:
    """Bulk profile import and its two polling endpoints take the limits their operations
    publish, in the revisions that ship the schema; the others have no such endpoint."""
    rev = revision(name)
    limits = rev.limits()
    endpoints = [
        "POST /api/profile-bulk-import-jobs",
        "GET /api/profile-bulk-import-jobs/{id}",
        "GET /api/profile-bulk-import-jobs/{id}/import-errors",
    ]
    if not rev.has("profile_bulk_import_job"):
        assert name.startswith("2025-")
        assert not any(endpoint in limits for endpoint in endpoints)
        return
    folder = resources.files("klaviyo_signal") / "_klaviyo" / "schemas" / name
    post = json.loads((folder / "profile_bulk_import_job.schema.json").read_text("utf-8"))
    polls = json.loads((folder / "profile_bulk_import_job.get_operations.json").read_text("utf-8"))
    published = [post["operation"], *polls["operations"].values()]
    for endpoint, operation in zip(endpoints, published, strict=True):
        burst, steady = (
            operation["x-klaviyo-ratelimit"]["burst"],
            operation["x-klaviyo-ratelimit"]["steady"],
        )
        assert limits[endpoint] == (int(burst.split("/")[0]), int(steady.split("/")[0]))
    assert limits["POST /api/profile-bulk-import-jobs"] == (10, 150)


def test_the_property_limit_is_the_revisions(fake: FakeKlaviyo) -> None:
    """A call may carry as many properties as its revision's schema allows: 400 since
    2025-04-15, 300 before; past it, a ValidationError names the limit."""
    blueprint = default_blueprint().enable("Wide")
    wide = {f"p{i}": i for i in range(350)}
    for name in SUPPORTED_REVISIONS:
        most = revision(name).max_event_properties
        assert most == (300 if name < "2025-04-15" else 400), name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RevisionWarning)  # the older revisions say so
            client = Client(
                PUBLIC_KEY,
                PRIVATE_KEY,
                base_url=fake.url,
                sync_mode=True,
                revision=name,
                blueprint=blueprint,
            )
        with client:
            if most < len(wide):
                with pytest.raises(ValidationError, match=f"over {most} event properties"):
                    client.track("Wide", wide, user_id="u-1")
            else:
                assert client.explain("track", "Wide", wide, user_id="u-1").status == "send"
                delivered = client.track("Wide", wide, user_id="u-1")
                assert delivered.status is DeliveryStatus.DELIVERED, delivered
                assert len(fake.events[-1].properties) == 351  # and the consent
            too_many = {f"p{i}": i for i in range(most + 1)}
            with pytest.raises(ValidationError, match=f"over {most} event properties"):
                client.track("Wide", too_many, user_id="u-1")
            with pytest.raises(ValidationError, match=f"over {most} event properties"):
                client.explain("track", "Wide", too_many, user_id="u-1")


def test_a_background_call_takes_the_revisions_property_limit(fake: FakeKlaviyo) -> None:
    """In background mode too (the fast lane and the full route), 350 properties are queued
    and delivered under the default revision, and refused under one that allows 300."""
    blueprint = default_blueprint().enable("Wide")
    wide = {f"p{i}": i for i in range(350)}
    with Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, blueprint=blueprint) as client:
        lane = client.track("Wide", wide, user_id="u-1")
        full = client.track("Wide", wide, user_id="u-2", message_id="m-wide")
        assert client.flush(20)
        assert lane.wait(5).status is DeliveryStatus.DELIVERED
        assert full.wait(5).status is DeliveryStatus.DELIVERED
    assert sorted(len(event.properties) for event in fake.events) == [351, 351]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RevisionWarning)
        old = Client(
            PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, blueprint=blueprint, revision="2025-01-15"
        )
    with old, pytest.raises(ValidationError, match="over 300 event properties"):
        old.track("Wide", wide, user_id="u-1")
