"""FakeKlaviyo behaves like Klaviyo's REST API (each supported revision) for plain HTTP clients."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from klaviyo_signal._klaviyo.revisions import DEFAULT_REVISION
from klaviyo_signal.testing import FakeKlaviyo

pytest_plugins = ("pytester",)

KEY = "pk_test_0123456789abcdef"
HEADERS = {
    "Authorization": f"Klaviyo-API-Key {KEY}",
    "revision": DEFAULT_REVISION,
    "Content-Type": "application/vnd.api+json",
}


def profile_data(**attributes: Any) -> dict[str, Any]:
    return {"data": {"type": "profile", "attributes": attributes}}


def event_attributes(metric: str = "Placed Order", **attributes: Any) -> dict[str, Any]:
    return {
        "properties": {"OrderId": "1234"},
        "metric": {"data": {"type": "metric", "attributes": {"name": metric}}},
        **attributes,
    }


def event_body(profile: dict[str, Any], metric: str = "Placed Order", **attributes: Any) -> Any:
    attributes = event_attributes(metric, **attributes)
    return {
        "data": {"type": "event", "attributes": {**attributes, "profile": profile_data(**profile)}}
    }


def bulk_body(*items: tuple[dict[str, Any], list[dict[str, Any]]]) -> Any:
    data = [
        {
            "type": "event-bulk-create",
            "attributes": {
                "profile": profile_data(**profile),
                "events": {"data": [{"type": "event", "attributes": e} for e in events]},
            },
        }
        for profile, events in items
    ]
    job = {"type": "event-bulk-create-job", "attributes": {"events-bulk-create": {"data": data}}}
    return {"data": job}


def import_body(**attributes: Any) -> Any:
    return {"data": {"type": "profile", "attributes": attributes}}


def subscription_body(kind: str, list_id: str, *profiles: dict[str, Any]) -> Any:
    data = [{"type": "profile", "attributes": p} for p in profiles]
    return {
        "data": {
            "type": f"profile-subscription-bulk-{kind}-job",
            "attributes": {"profiles": {"data": data}},
            "relationships": {"list": {"data": {"type": "list", "id": list_id}}},
        }
    }


def post(
    fake: FakeKlaviyo, path: str, body: Any, headers: dict[str, str] | None = None
) -> requests.Response:
    return requests.post(
        fake.url + path, json=body, headers=HEADERS if headers is None else headers
    )


@pytest.fixture
def fake() -> Iterator[FakeKlaviyo]:
    with FakeKlaviyo() as running:
        yield running


def pointers(response: requests.Response) -> list[str]:
    return [e["source"].get("pointer") for e in response.json()["errors"]]


# --- events ---------------------------------------------------------------------------------


def test_valid_event_is_accepted_and_recorded(fake: FakeKlaviyo) -> None:
    """A valid event gets 202 with an empty JSON:API response and is recorded on its profile."""
    response = post(fake, "/api/events", event_body({"email": "a@example.com"}, value=9.99))

    assert response.status_code == 202
    assert response.content == b""
    assert response.headers["Content-Type"] == "application/vnd.api+json"
    assert int(response.headers["RateLimit-Remaining"]) < int(response.headers["RateLimit-Limit"])
    [event] = fake.events
    assert (event.metric, event.value, event.properties) == (
        "Placed Order",
        9.99,
        {"OrderId": "1234"},
    )
    assert event.profile.email == "a@example.com"
    assert event.request_index == 0


def test_schema_failures_are_reported_one_record_each_with_pointers(fake: FakeKlaviyo) -> None:
    """Every schema error becomes a 400 record pointing at the offending instance."""
    body = event_body({"email": "a@example.com"}, value="lots")
    del body["data"]["attributes"]["metric"]["data"]["attributes"]["name"]

    response = post(fake, "/api/events", body)

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert {(e["code"], e["title"], e["status"]) for e in errors} == {
        ("invalid", "Invalid input.", 400)
    }
    assert sorted(pointers(response)) == [
        "/data/attributes/metric/data/attributes",
        "/data/attributes/value",
    ]
    assert "'lots' is not of type 'number'" in response.text
    assert fake.events == []
    assert fake.requests[0].status == 400


def test_malformed_json_is_a_400(fake: FakeKlaviyo) -> None:
    """A body that is not JSON is rejected with 400 and recorded with body None."""
    response = requests.post(fake.url + "/api/events", data=b"{nope", headers=HEADERS)

    assert response.status_code == 400
    assert response.json()["errors"][0]["status"] == 400
    assert fake.requests[0].body is None


def test_event_without_identifier_is_rejected_at_the_profile(fake: FakeKlaviyo) -> None:
    """An event whose profile names no identifier gets Klaviyo's 'identifiers' 400."""
    response = post(fake, "/api/events", event_body({"first_name": "Ann"}))

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["detail"] == "One or more identifiers is required"
    assert error["source"] == {"pointer": "/data/attributes/profile"}


@pytest.mark.parametrize(
    ("attributes", "pointer"),
    [
        ({"properties": {f"p{i}": i for i in range(401)}}, "/data/attributes/properties"),
        ({"properties": {"big": "x" * (100 * 1024 + 1)}}, "/data/attributes/properties/big"),
        ({"properties": {"items": list(range(4001))}}, "/data/attributes/properties/items"),
        ({"time": "1989-12-31T23:59:59+00:00"}, "/data/attributes/time"),
        ({"time": "2999-01-01T00:00:00Z"}, "/data/attributes/time"),
    ],
)
def test_ingestion_limits_are_enforced(
    fake: FakeKlaviyo, attributes: dict[str, Any], pointer: str
) -> None:
    """Klaviyo's documented event ingestion limits turn into 400s pointing at the culprit."""
    response = post(fake, "/api/events", event_body({"email": "a@example.com"}, **attributes))

    assert response.status_code == 400
    assert pointers(response) == [pointer]


def test_nesting_deeper_than_ten_levels_is_rejected(fake: FakeKlaviyo) -> None:
    """Properties nested more than 10 levels below the properties object are rejected."""
    nested: dict[str, Any] = {"leaf": 1}
    for _ in range(11):
        nested = {"n": nested}

    ok = post(fake, "/api/events", event_body({"email": "a@x.io"}, properties=nested["n"]))
    too_deep = post(fake, "/api/events", event_body({"email": "a@x.io"}, properties=nested))

    assert ok.status_code == 202
    assert too_deep.status_code == 400
    assert pointers(too_deep) == ["/data/attributes/properties" + "/n" * 11]


def test_metric_name_must_be_shorter_than_128(fake: FakeKlaviyo) -> None:
    """A metric name of 128 characters is rejected; 127 is fine."""
    assert post(fake, "/api/events", event_body({"email": "a@x.io"}, "m" * 127)).status_code == 202
    response = post(fake, "/api/events", event_body({"email": "a@x.io"}, "m" * 128))

    assert response.status_code == 400
    assert pointers(response) == ["/data/attributes/metric/data/attributes/name"]


def test_unique_id_deduplicates_per_profile_and_metric(fake: FakeKlaviyo) -> None:
    """A repeated unique_id is accepted with 202 but recorded once per profile and metric."""
    first = post(fake, "/api/events", event_body({"email": "a@x.io"}, unique_id="u1"))
    again = post(fake, "/api/events", event_body({"email": "A@X.io"}, unique_id="u1"))
    other_metric = post(
        fake, "/api/events", event_body({"email": "a@x.io"}, "Refund", unique_id="u1")
    )
    other_profile = post(fake, "/api/events", event_body({"email": "b@x.io"}, unique_id="u1"))

    assert [r.status_code for r in (first, again, other_metric, other_profile)] == [202] * 4
    assert [(e.metric, e.profile.email) for e in fake.events] == [
        ("Placed Order", "a@x.io"),
        ("Refund", "a@x.io"),
        ("Placed Order", "b@x.io"),
    ]


# --- profiles and merging -------------------------------------------------------------------


def test_profile_import_creates_then_updates(fake: FakeKlaviyo) -> None:
    """profile-import answers 201 with the new profile, then 200 for the same person."""
    created = post(fake, "/api/profile-import", import_body(email="a@x.io", first_name="Ann"))
    updated = post(fake, "/api/profile-import", import_body(email="a@x.io", last_name="Lee"))

    assert (created.status_code, updated.status_code) == (201, 200)
    data = updated.json()["data"]
    assert data["type"] == "profile"
    assert data["id"] == created.json()["data"]["id"]
    assert (data["attributes"]["first_name"], data["attributes"]["last_name"]) == ("Ann", "Lee")
    assert len(fake.profiles) == 1


def test_anonymous_activity_merges_into_the_identified_profile() -> None:
    """An anonymous profile is found again by anonymous_id and its attributes merge key by key
    (profile-import under 2024-10-15, which still takes anonymous_id)."""
    with FakeKlaviyo(retired=()) as fake:
        _anonymous_activity_merges(fake, {**HEADERS, "revision": "2024-10-15"})


def _anonymous_activity_merges(fake: FakeKlaviyo, headers: dict[str, str]) -> None:
    anonymous = {
        "anonymous_id": "anon-1",
        "properties": {"seen": 1, "plan": "free"},
        "location": {"city": "Boston"},
    }
    post(fake, "/api/events", event_body(anonymous, "Viewed Product", unique_id="e1"), headers)

    response = post(
        fake,
        "/api/profile-import",
        import_body(
            email="e@x.io",
            anonymous_id="anon-1",
            properties={"plan": "pro"},
            location={"country": "US"},
        ),
        headers,
    )

    assert response.status_code == 200
    [profile] = fake.profiles
    assert (profile.email, profile.anonymous_ids) == ("e@x.io", ("anon-1",))
    assert profile.properties == {"seen": 1, "plan": "pro"}
    assert profile.attributes["location"] == {"city": "Boston", "country": "US"}
    [event] = fake.events_for(email="e@x.io", metric="Viewed Product")
    assert event.profile == profile
    assert fake.profile_for(anonymous_id="anon-1") == profile


def test_a_request_naming_two_profiles_merges_them(fake: FakeKlaviyo) -> None:
    """Identifiers of two existing profiles in one request leave one profile with both histories."""
    post(fake, "/api/events", event_body({"email": "a@x.io"}, unique_id="e1"))
    post(fake, "/api/events", event_body({"external_id": "cust-9"}, unique_id="e2"))
    assert len(fake.profiles) == 2

    post(fake, "/api/profile-import", import_body(email="a@x.io", external_id="cust-9"))

    [profile] = fake.profiles
    assert (profile.email, profile.external_id) == ("a@x.io", "cust-9")
    assert [e.unique_id for e in fake.events_for(external_id="cust-9")] == ["e1", "e2"]


# --- bulk jobs ------------------------------------------------------------------------------


def test_bulk_job_records_each_event_on_its_profile(fake: FakeKlaviyo) -> None:
    """Each bulk item is one profile plus its events, all recorded on that profile."""
    body = bulk_body(
        (
            {"email": "a@x.io"},
            [event_attributes("Viewed", unique_id="1"), event_attributes("Bought")],
        ),
        ({"phone_number": "+15005550006"}, [event_attributes("Viewed", unique_id="2")]),
    )

    response = post(fake, "/api/event-bulk-create-jobs", body)

    assert response.status_code == 202
    assert response.json()["data"]["type"] == "event-bulk-create-job"
    assert [e.metric for e in fake.events_for(email="a@x.io")] == ["Viewed", "Bought"]
    assert [e.metric for e in fake.events_for(phone_number="+15005550006")] == ["Viewed"]


def test_bulk_item_without_identifier_names_the_item(fake: FakeKlaviyo) -> None:
    """A bulk item with no identifier is rejected at its profile and nothing is kept."""
    body = bulk_body(({"email": "a@x.io"}, [event_attributes()]), ({}, [event_attributes()]))

    response = post(fake, "/api/event-bulk-create-jobs", body)

    assert response.status_code == 400
    assert pointers(response) == ["/data/attributes/events-bulk-create/data/1/attributes/profile"]
    assert fake.events == []
    assert fake.profiles == []


def test_subscriptions_and_lists_are_recorded() -> None:
    """Bulk subscribe records consent per channel and list membership; unsubscribe revokes them.

    Under 2024-10-15, the last revision where a profile may leave out ``subscriptions``
    (every channel its identifiers allow is then subscribed).
    """
    with FakeKlaviyo(retired=()) as fake:
        _subscriptions_and_lists_are_recorded(fake, {**HEADERS, "revision": "2024-10-15"})


def _subscriptions_and_lists_are_recorded(fake: FakeKlaviyo, headers: dict[str, str]) -> None:
    subscribe = subscription_body(
        "create", "L1", {"email": "a@x.io", "phone_number": "+15005550006"}
    )
    unsubscribe = subscription_body(
        "delete",
        "L1",
        {"email": "a@x.io", "subscriptions": {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}}},
    )

    response = post(fake, "/api/profile-subscription-bulk-create-jobs", subscribe, headers)
    assert response.status_code == 202
    profile = fake.profile_for(email="a@x.io")
    assert profile is not None
    assert profile.lists == ("L1",)
    assert profile.subscriptions["email"]["marketing"]["consent"] == "SUBSCRIBED"
    assert profile.subscriptions["sms"]["transactional"]["consent"] == "SUBSCRIBED"

    response = post(fake, "/api/profile-subscription-bulk-delete-jobs/", unsubscribe, headers)
    assert response.status_code == 202
    profile = fake.profile_for(email="a@x.io")
    assert profile is not None
    assert profile.lists == ()
    assert profile.subscriptions["email"]["marketing"]["consent"] == "UNSUBSCRIBED"
    assert profile.subscriptions["sms"]["marketing"]["consent"] == "SUBSCRIBED"


def test_subscribe_rejects_attributes_klaviyo_does_not_accept(fake: FakeKlaviyo) -> None:
    """A profile attribute other than the four allowed gets Klaviyo's real 400 record."""
    body = subscription_body(
        "create",
        "L1",
        {
            "email": "a@x.io",
            "last_name": "Lee",
            "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}},
        },
    )

    response = post(fake, "/api/profile-subscription-bulk-create-jobs", body)

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["detail"] == "'last_name' is not a valid field for the resource 'profile'."
    assert error["source"] == {"pointer": "/data/attributes/profiles/data/0/attributes/last_name"}
    assert fake.profiles == []


# --- gateway rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "Bearer pk_x", "Klaviyo-API-Key", "klaviyo-api-key pk_x"]
)
def test_missing_or_malformed_authorization_gets_the_real_401(
    fake: FakeKlaviyo, authorization: str | None
) -> None:
    """Without a well-formed Klaviyo-API-Key header the answer is Klaviyo's real 401 body."""
    headers = {"revision": "2024-10-15"}
    if authorization is not None:
        headers["Authorization"] = authorization

    first = post(fake, "/api/events", event_body({"email": "a@x.io"}), headers)
    second = post(fake, "/api/events", event_body({"email": "a@x.io"}), headers)

    assert first.status_code == 401
    [error] = first.json()["errors"]
    assert error["code"] == "not_authenticated"
    assert error["detail"] == "Missing or invalid authorization scheme. Please use Klaviyo-API-Key."
    assert error["id"] != second.json()["errors"][0]["id"]
    assert fake.events == []


def test_missing_revision_header_is_a_400_naming_the_parameter(fake: FakeKlaviyo) -> None:
    """A request without the revision header gets a 400 whose source names 'revision'."""
    headers = {"Authorization": f"Klaviyo-API-Key {KEY}"}

    response = post(fake, "/api/events", event_body({"email": "a@x.io"}), headers)

    assert response.status_code == 400
    assert response.json()["errors"][0]["source"] == {"parameter": "revision"}


def test_paths_work_with_and_without_trailing_slash(fake: FakeKlaviyo) -> None:
    """Both /api/events and /api/events/ are served; unknown paths get a Klaviyo-shaped 404."""
    assert (
        post(fake, "/api/events/", event_body({"email": "a@x.io"}, unique_id="1")).status_code
        == 202
    )
    assert (
        post(fake, "/api/events", event_body({"email": "a@x.io"}, unique_id="2")).status_code == 202
    )

    missing = post(fake, "/api/nope", {})

    assert missing.status_code == 404
    assert missing.json()["errors"][0]["code"] == "not_found"
    assert len(fake.events) == 2


def test_private_key_never_appears_in_recorded_state(fake: FakeKlaviyo) -> None:
    """The Authorization value is masked and the key is scrubbed wherever a caller echoed it."""
    body = event_body({"email": "a@x.io", "properties": {"oops": KEY}}, properties={"k": KEY})

    post(fake, f"/api/events?leak={KEY}", body)

    recorded = fake.requests[0]
    assert recorded.headers["authorization"] == "Klaviyo-API-Key pk_***"
    for state in (fake.requests, fake.events, fake.profiles, fake):
        assert KEY not in repr(state)


# --- faults ---------------------------------------------------------------------------------


def test_fail_next_429_sends_the_throttled_body_and_retry_after(fake: FakeKlaviyo) -> None:
    """An injected 429 carries Retry-After and Klaviyo's throttled body, then service resumes."""
    fake.fail_next(429, retry_after=3)

    throttled = post(fake, "/api/events", event_body({"email": "a@x.io"}))
    ok = post(fake, "/api/events", event_body({"email": "a@x.io"}))

    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "3"
    assert "RateLimit-Limit" not in throttled.headers
    error = throttled.json()["errors"][0]
    assert (error["code"], error["title"]) == ("throttled", "Request was throttled.")
    assert error["detail"] == "Request was throttled. Expected available in 3 seconds."
    assert ok.status_code == 202
    assert [r.status for r in fake.requests] == [429, 202]
    assert len(fake.events) == 1
    assert fake.throttled == 0


@pytest.mark.parametrize(("status", "code"), [(503, "error"), (403, "permission_denied")])
def test_fail_next_repeats_and_changes_no_state(fake: FakeKlaviyo, status: int, code: str) -> None:
    """fail_next(times=2) fails two requests with a Klaviyo-shaped body and records nothing."""
    fake.fail_next(status, times=2)

    answers = [post(fake, "/api/events", event_body({"email": "a@x.io"})) for _ in range(3)]

    assert [r.status_code for r in answers] == [status, status, 202]
    assert answers[0].json()["errors"][0]["code"] == code
    assert len(fake.events) == 1
    assert len(fake.profiles) == 1


def test_latency_delays_each_answer() -> None:
    """FakeKlaviyo(latency=...) sleeps before answering."""
    with FakeKlaviyo(latency=0.2) as slow:
        started = time.monotonic()
        post(slow, "/api/events", event_body({"email": "a@x.io"}))

        assert time.monotonic() - started >= 0.2


def test_drop_next_connection_closes_without_a_response(fake: FakeKlaviyo) -> None:
    """The next request sees its connection closed; it is recorded with status None."""
    fake.drop_next_connection()

    with pytest.raises(requests.ConnectionError):
        post(fake, "/api/events", event_body({"email": "a@x.io"}))
    ok = post(fake, "/api/events", event_body({"email": "a@x.io"}))

    assert ok.status_code == 202
    assert [r.status for r in fake.requests] == [None, 202]
    assert len(fake.events) == 1


def test_rate_limits_throttle_within_a_scaled_window() -> None:
    """Over the steady limit the fake answers 429 with Retry-After, until the window resets."""
    limits = {"POST /api/events": (100, 2)}
    # time_scale=0.02: the steady window is 1.2 s, the burst window 0.02 s.
    with FakeKlaviyo(rate_limits=limits, time_scale=0.02) as fake:
        answers = []
        for i in range(6):
            answers.append(
                post(fake, "/api/events", event_body({"email": "a@x.io"}, unique_id=str(i)))
            )
            if answers[-1].status_code == 429:
                break
        throttled = answers[-1]

        assert throttled.status_code == 429
        assert len(answers) <= 5  # 2 per window; at most one window boundary in between
        assert "RateLimit-Remaining" not in throttled.headers
        wait = float(throttled.headers["X-Fake-Retry-After"])
        assert 0 < wait <= 1.2
        assert int(throttled.headers["Retry-After"]) == math.ceil(wait) >= 1
        assert throttled.json()["errors"][0]["code"] == "throttled"
        assert fake.throttled == 1

        time.sleep(wait)
        assert (
            post(fake, "/api/events", event_body({"email": "a@x.io"}, unique_id="x")).status_code
            == 202
        )


def test_reset_forgets_everything(fake: FakeKlaviyo) -> None:
    """reset() clears profiles, events, requests and queued faults."""
    post(fake, "/api/events", event_body({"email": "a@x.io"}))
    fake.fail_next(500)

    fake.reset()

    assert (fake.events, fake.profiles, fake.requests) == ([], [], [])
    assert post(fake, "/api/events", event_body({"email": "a@x.io"})).status_code == 202


def test_stop_closes_the_socket() -> None:
    """After stop() the port no longer accepts connections, and stop() can be called twice."""
    fake = FakeKlaviyo()
    fake.start()
    url = fake.url
    fake.stop()
    fake.stop()

    with pytest.raises(requests.ConnectionError):
        requests.post(url + "/api/events", json={}, headers=HEADERS, timeout=2)
    assert not fake.running


# --- the pytest plugin ----------------------------------------------------------------------

# The pytest11 entry point registers the plugin once the package is installed; register it by
# hand otherwise, without registering it twice.
PLUGIN_CONFTEST = """
import klaviyo_signal._pytest_plugin as plugin

def pytest_configure(config):
    if not config.pluginmanager.is_registered(plugin):
        config.pluginmanager.register(plugin, "klaviyo_signal_test")
"""


def test_pytest_plugin_provides_a_running_fake(pytester: pytest.Pytester) -> None:
    """The klaviyo_fake fixture gives a started fake and stops it after the test."""
    pytester.makeconftest(PLUGIN_CONFTEST)
    pytester.makepyfile(
        """
        import requests

        def test_fake(klaviyo_fake):
            answer = requests.post(klaviyo_fake.url + "/api/events", json={})
            assert answer.status_code == 401
            assert klaviyo_fake.running
        """
    )

    pytester.runpytest_inprocess().assert_outcomes(passed=1)


def test_pytest_plugin_binds_a_sync_client_to_the_fake(pytester: pytest.Pytester) -> None:
    """The klaviyo_client fixture is a sync-mode Client whose calls reach klaviyo_fake."""
    pytester.makeconftest(PLUGIN_CONFTEST)
    pytester.makepyfile(
        """
        def test_client(klaviyo_client, klaviyo_fake):
            klaviyo_client.identify("user-1", {"email": "a@example.com"})
            [request] = klaviyo_fake.requests
            assert request.path == "/api/profile-import"
            assert request.status == 201
            assert request.headers["authorization"] == "Klaviyo-API-Key pk_***"
        """
    )

    pytester.runpytest_inprocess().assert_outcomes(passed=1)


def test_pytest_plugin_binds_a_background_client_to_the_fake(pytester: pytest.Pytester) -> None:
    """The klaviyo_background_client fixture queues calls and sends them as bulk jobs on flush."""
    pytester.makeconftest(PLUGIN_CONFTEST)
    pytester.makepyfile(
        """
        def test_client(klaviyo_background_client, klaviyo_fake):
            delivery = klaviyo_background_client.track("Order Completed", user_id="u-1")
            assert delivery.status.value == "queued"
            assert klaviyo_background_client.flush(10)
            assert delivery.wait(0).status.value == "delivered"
            [request] = klaviyo_fake.requests
            assert request.path == "/api/event-bulk-create-jobs"
            assert klaviyo_fake.events_for(external_id="u-1")
        """
    )

    pytester.runpytest_inprocess().assert_outcomes(passed=1)
