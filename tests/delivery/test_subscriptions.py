"""Subscribe/unsubscribe calls: the checks at the call and the job bodies Klaviyo receives."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from klaviyo_signal import (
    Blueprint,
    BlueprintError,
    Client,
    Delivery,
    DeliveryStatus,
    PermissionDeniedError,
    ValidationError,
    default_blueprint,
)
from klaviyo_signal._blueprint.compiled import compile_blueprint
from klaviyo_signal._calls.message import build_message
from klaviyo_signal._calls.subscription import build_subscription
from klaviyo_signal._klaviyo.models import SUBSCRIBE_PATH, UNSUBSCRIBE_PATH, Subscription
from klaviyo_signal._klaviyo.wire import subscription_body
from klaviyo_signal.testing import FakeKlaviyo, FakeRequest
from tests.conftest import (
    PRIVATE_KEY,
    PUBLIC_KEY,
    assert_valid,
    close_and_check_middle_refused,
    refuse_item,
    schema_errors,
)

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


def test_default_channels_follow_the_identifiers_given() -> None:
    """Without channels=, the marketing channels of the identifiers given are subscribed."""
    both = build_subscription("subscribe", email="a@example.com", phone="+1 415 555 0100")
    assert both.channels == ("email", "sms")
    assert build_subscription("subscribe", phone="+14155550100").channels == ("sms",)


def test_subscribe_body_is_valid_and_minimal() -> None:
    """A subscribe job sends only email, phone_number and subscriptions, plus the list."""
    sub = build_subscription(
        "subscribe",
        email="a@example.com",
        phone="+14155550100",
        list_id="Y6nRLr",
        channels=["email", "sms", "sms_transactional"],
        custom_source="Checkout",
    )
    body = subscription_body([sub])
    assert_valid(SUBSCRIBE_PATH, body)
    assert body == {
        "data": {
            "type": "profile-subscription-bulk-create-job",
            "attributes": {
                "profiles": {
                    "data": [
                        {
                            "type": "profile",
                            "attributes": {
                                "email": "a@example.com",
                                "phone_number": "+14155550100",
                                "subscriptions": {
                                    "email": {"marketing": {"consent": "SUBSCRIBED"}},
                                    "sms": {
                                        "marketing": {"consent": "SUBSCRIBED"},
                                        "transactional": {"consent": "SUBSCRIBED"},
                                    },
                                },
                            },
                        }
                    ]
                },
                "custom_source": "Checkout",
            },
            "relationships": {"list": {"data": {"type": "list", "id": "Y6nRLr"}}},
        }
    }


def test_consented_at_means_historical_import() -> None:
    """consented_at marks the job historical_import and stamps every channel."""
    sub = build_subscription(
        "subscribe", email="a@example.com", consented_at="2024-03-01T10:00:00Z", now=NOW
    )
    body = subscription_body([sub])
    assert_valid(SUBSCRIBE_PATH, body)
    attributes = body["data"]["attributes"]  # type: ignore[index, call-overload]
    assert attributes["historical_import"] is True
    profile = attributes["profiles"]["data"][0]["attributes"]
    assert profile["subscriptions"]["email"]["marketing"] == {
        "consent": "SUBSCRIBED",
        "consented_at": "2024-03-01T10:00:00+00:00",
    }


def test_unsubscribe_body_is_valid() -> None:
    """An unsubscribe job revokes the chosen channels and names the list."""
    sub = build_subscription(
        "unsubscribe", email="a@example.com", phone="+14155550100", list_id="Y6nRLr"
    )
    body = subscription_body([sub])
    assert_valid(UNSUBSCRIBE_PATH, body)
    profile = body["data"]["attributes"]["profiles"]["data"][0]["attributes"]  # type: ignore[index, call-overload]
    assert profile["subscriptions"] == {
        "email": {"marketing": {"consent": "UNSUBSCRIBED"}},
        "sms": {"marketing": {"consent": "UNSUBSCRIBED"}},
    }


def test_schema_rejects_what_we_never_send() -> None:
    """The official schema check is real: a profile attribute Klaviyo refuses is caught."""
    body = subscription_body([build_subscription("subscribe", email="a@example.com")])
    body["data"]["attributes"]["profiles"]["data"][0]["type"] = "person"  # type: ignore[index, call-overload]
    assert schema_errors(SUBSCRIBE_PATH, body)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "subscribe: pass email= or phone="),
        ({"email": "nope"}, "email: 'nope' is not a valid email address"),
        ({"phone": "07911 123456"}, "phone: '07911 123456' is not an E.164 phone number"),
        ({"email": "a@example.com", "channels": ["sms"]}, "channels: 'sms' needs phone="),
        ({"email": "a@example.com", "channels": ["push"]}, "unknown channel 'push'"),
        ({"email": "a@example.com", "channels": "email"}, "not the string 'email'"),
        ({"email": "a@example.com", "channels": []}, "at least one channel"),
        ({"email": "a@example.com", "list_id": ""}, "list_id: must be a non-empty string"),
        ({"email": "a@example.com", "list_id": "L\ud800"}, "list_id: the string contains a lone"),
        ({"email": "a@example.com", "custom_source": "\ud800"}, "custom_source: the string con"),
        ({"email": "\ud800@example.com"}, "email: the string contains a lone surrogate"),
        ({"email": "a@example.com", "consent": {"marketing": False}}, "consent: marketing"),
        ({"email": "a@example.com", "consented_at": "2999-01-01T00:00:00Z"}, "in the future"),
        ({"email": "a@example.com", "consented_at": "yesterday"}, "consented_at: 'yesterday'"),
    ],
)
def test_bad_calls_are_refused_with_the_field(kwargs: dict[str, object], message: str) -> None:
    """Each bad subscribe call raises ValidationError naming the field and the rule."""
    with pytest.raises(ValidationError) as caught:
        build_subscription("subscribe", **kwargs)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_jobs_respect_klaviyo_limits() -> None:
    """A job holds at most 1000 subscribes or 100 unsubscribes, all with one job key."""
    subs = [build_subscription("unsubscribe", email=f"u{i}@example.com") for i in range(101)]
    assert_valid(UNSUBSCRIBE_PATH, subscription_body(subs[:100]))
    with pytest.raises(ValueError, match="at most 100"):
        subscription_body(subs)
    mixed = [
        build_subscription("subscribe", email="a@example.com", list_id="A"),
        build_subscription("subscribe", email="b@example.com", list_id="B"),
    ]
    with pytest.raises(ValueError, match="same job_key"):
        subscription_body(mixed)


# -- through the Client, end to end against FakeKlaviyo ----------------------------------

SCOPES = "lists:write, profiles:write and subscriptions:write"
NEWSLETTER = {"identify": {"subscribe": {"trait": "newsletter", "list_id": "News"}}}


@pytest.fixture
def fake() -> Iterator[FakeKlaviyo]:
    with FakeKlaviyo() as server:
        yield server


def client_for(fake: FakeKlaviyo, **options: Any) -> Client:
    options.setdefault("flush_interval", 60.0)
    return Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, **options)


def sent(fake: FakeKlaviyo, *paths: str) -> list[FakeRequest]:
    """Return the requests to ``paths``, each checked against Klaviyo's official schema."""
    found = [r for r in fake.requests if r.path in paths]
    for request in found:
        assert_valid(request.path, request.body)
    return found


def job_sizes(requests: list[FakeRequest]) -> list[int]:
    return [len(r.body["data"]["attributes"]["profiles"]["data"]) for r in requests]


def test_sync_subscribe_records_consent_on_the_list(fake: FakeKlaviyo) -> None:
    """In sync mode subscribe sends one valid job and returns delivered with HTTP 202."""
    client = client_for(fake, sync_mode=True)
    delivery = client.subscribe(
        email="a@example.com", phone="+14155550100", list_id="News", custom_source="Checkout"
    )
    assert (delivery.status, delivery.http_status) == (DeliveryStatus.DELIVERED, 202)
    (request,) = sent(fake, SUBSCRIBE_PATH)
    assert request.body["data"]["relationships"]["list"]["data"]["id"] == "News"
    profile = fake.profile_for(email="a@example.com")
    assert profile is not None
    assert profile.lists == ("News",)
    assert profile.subscriptions["email"]["marketing"]["consent"] == "SUBSCRIBED"
    assert profile.subscriptions["sms"]["marketing"]["consent"] == "SUBSCRIBED"
    assert "transactional" not in profile.subscriptions["sms"]


def test_sync_unsubscribe_revokes_consent_and_membership(fake: FakeKlaviyo) -> None:
    """unsubscribe sends a valid delete job that takes the profile off the list."""
    client = client_for(fake, sync_mode=True)
    client.subscribe(email="a@example.com", list_id="News")
    delivery = client.unsubscribe(email="a@example.com", list_id="News")
    assert (delivery.status, delivery.http_status) == (DeliveryStatus.DELIVERED, 202)
    assert len(sent(fake, UNSUBSCRIBE_PATH)) == 1
    profile = fake.profile_for(email="a@example.com")
    assert profile is not None
    assert profile.lists == ()
    assert profile.subscriptions["email"]["marketing"]["consent"] == "UNSUBSCRIBED"


def test_historical_import_end_to_end(fake: FakeKlaviyo) -> None:
    """consented_at sends historical_import with the consent time, and Klaviyo records it."""
    client = client_for(fake, sync_mode=True)
    client.subscribe(
        email="a@example.com", consented_at=datetime(2024, 3, 1, 10, tzinfo=timezone.utc)
    )
    (request,) = sent(fake, SUBSCRIBE_PATH)
    assert request.body["data"]["attributes"]["historical_import"] is True
    profile = fake.profile_for(email="a@example.com")
    assert profile is not None
    assert profile.subscriptions["email"]["marketing"] == {
        "consent": "SUBSCRIBED",
        "consented_at": "2024-03-01T10:00:00+00:00",
    }


def test_invalid_calls_raise_in_both_modes(fake: FakeKlaviyo) -> None:
    """Bad input raises ValidationError at the call in background mode too, sending nothing."""
    client = client_for(fake)
    with pytest.raises(ValidationError, match="consent: marketing consent is denied"):
        client.subscribe(email="a@example.com", consent={"marketing": False})
    with pytest.raises(ValidationError, match=r"E\.164"):
        client.unsubscribe(phone="07911 123456")
    client.close()
    assert fake.requests == []


def test_sync_403_names_the_subscription_scopes(fake: FakeKlaviyo) -> None:
    """A 403 raises PermissionDeniedError naming lists, profiles and subscriptions write."""
    seen: list[Delivery] = []
    client = client_for(fake, sync_mode=True, on_delivery=seen.append)
    fake.fail_next(403)
    with pytest.raises(PermissionDeniedError) as caught:
        client.subscribe(email="a@example.com")
    assert SCOPES in str(caught.value)
    assert caught.value.scopes == ("lists:write", "profiles:write", "subscriptions:write")
    assert [d.status for d in seen] == [DeliveryStatus.FAILED]
    fake.fail_next(403)
    with pytest.raises(PermissionDeniedError, match=SCOPES):
        client.unsubscribe(email="a@example.com")


def test_403_advice_depends_on_the_endpoint(fake: FakeKlaviyo) -> None:
    """Other endpoints' 403s name their own scopes: events:write for track, not lists:write."""
    client = client_for(fake, sync_mode=True, blueprint=default_blueprint().enable("Signed Up"))
    fake.fail_next(403)
    with pytest.raises(PermissionDeniedError, match=r"give it events:write \("):
        client.track("Signed Up", user_id="u-1")
    fake.fail_next(403)
    with pytest.raises(PermissionDeniedError, match=r"give it profiles:write \("):
        client.identify("u-1")


def test_background_403_fails_with_the_scopes_and_logs_once(
    fake: FakeKlaviyo, caplog: pytest.LogCaptureFixture
) -> None:
    """In background mode a 403 fails the job's calls, each reason naming the scopes."""
    fake.fail_next(403, times=2)
    client = client_for(fake)
    calls = [client.subscribe(email=f"u{i}@example.com", list_id=f"L{i % 2}") for i in range(4)]
    with caplog.at_level(logging.ERROR, logger="klaviyo_signal"):
        assert client.flush(timeout=10)
    finals = [c.wait(timeout=5) for c in calls]
    assert {(d.status, d.http_status) for d in finals} == {(DeliveryStatus.FAILED, 403)}
    assert all(SCOPES in (d.reason or "") for d in finals)
    assert sum(SCOPES in r.getMessage() for r in caplog.records) == 1
    assert client.stats.failed == 4
    client.close()


def test_background_batches_up_to_1000_subscribes_per_job(fake: FakeKlaviyo) -> None:
    """2,500 subscribes to one list go out as jobs of 1,000, 1,000 and 500 profiles."""
    client = client_for(fake)
    calls = [client.subscribe(email=f"u{i}@example.com", list_id="News") for i in range(2500)]
    assert calls[0].status is DeliveryStatus.QUEUED
    assert client.flush(timeout=30)
    assert {c.wait(timeout=5).status for c in calls} == {DeliveryStatus.DELIVERED}
    assert job_sizes(sent(fake, SUBSCRIBE_PATH)) == [1000, 1000, 500]
    assert client.stats.delivered == 2500
    assert client.stats.requests == 3
    client.close()


def test_background_batches_up_to_100_unsubscribes_per_job(fake: FakeKlaviyo) -> None:
    """250 unsubscribes go out as jobs of 100, 100 and 50 profiles."""
    client = client_for(fake)
    calls = [client.unsubscribe(email=f"u{i}@example.com") for i in range(250)]
    assert client.flush(timeout=30)
    assert {c.wait(timeout=5).http_status for c in calls} == {202}
    assert job_sizes(sent(fake, UNSUBSCRIBE_PATH)) == [100, 100, 50]
    client.close()


def test_jobs_are_grouped_by_list_source_and_import_mode(fake: FakeKlaviyo) -> None:
    """Calls share a job only with the same list, custom source and historical flag."""
    client = client_for(fake)
    when = "2024-03-01T10:00:00Z"
    keys = [("A", None, None), ("B", None, None), ("A", "Footer", None), ("A", None, when)]
    for i in range(12):
        list_id, source, consented_at = keys[i % 4]
        client.subscribe(
            email=f"u{i}@example.com",
            list_id=list_id,
            custom_source=source,
            consented_at=consented_at,
        )
    assert client.flush(timeout=10)
    jobs: Counter[tuple[str, str | None, bool]] = Counter()
    for request in sent(fake, SUBSCRIBE_PATH):
        data = request.body["data"]
        attributes = data["attributes"]
        key = (
            data["relationships"]["list"]["data"]["id"],
            attributes.get("custom_source"),
            attributes.get("historical_import", False),
        )
        jobs[key] += len(attributes["profiles"]["data"])
    assert jobs == {
        ("A", None, False): 3,
        ("B", None, False): 3,
        ("A", "Footer", False): 3,
        ("A", None, True): 3,
    }
    client.close()


def test_a_later_change_for_the_same_profile_wins(fake: FakeKlaviyo) -> None:
    """An unsubscribe queued after a subscribe of the same email is sent after it."""
    client = client_for(fake)
    client.subscribe(email="b@example.com", list_id="News")
    client.unsubscribe(email="a@example.com", list_id="News")
    client.subscribe(email="a@example.com", list_id="News")
    client.unsubscribe(email="a@example.com", list_id="News")
    assert client.flush(timeout=10)
    profile = fake.profile_for(email="a@example.com")
    assert profile is not None
    assert profile.lists == ()
    other = fake.profile_for(email="b@example.com")
    assert other is not None
    assert other.lists == ("News",)
    client.close()


def test_an_unsubscribe_waits_for_a_paused_subscribe_of_the_same_profile(
    fake: FakeKlaviyo,
) -> None:
    """A 429 on the subscribe endpoint holds back a later unsubscribe: it stays the last word."""
    fake.fail_next(429, retry_after=1)
    client = client_for(fake, flush_interval=0.05)
    client.subscribe(email="a@example.com", list_id="News")
    deadline = time.monotonic() + 10
    while not any(r.status == 429 for r in fake.requests):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    last = client.unsubscribe(email="a@example.com", list_id="News")
    assert last.wait(timeout=10).status is DeliveryStatus.DELIVERED
    client.close()
    assert [r.status for r in fake.requests] == [429, 202, 202]
    profile = fake.profile_for(email="a@example.com")
    assert profile is not None
    assert profile.lists == ()


def test_subscriptions_share_the_rate_limiter(fake: FakeKlaviyo) -> None:
    """A 429 on the subscribe endpoint pauses it and sends the job again, losing nothing."""
    fake.fail_next(429, retry_after=0.05)
    client = client_for(fake)
    calls = [client.subscribe(email=f"u{i}@example.com") for i in range(5)]
    assert client.flush(timeout=10)
    assert {c.wait(timeout=5).status for c in calls} == {DeliveryStatus.DELIVERED}
    assert [r.status for r in fake.requests] == [429, 202]
    assert client.stats.rate_limited == 1
    client.close()


def test_interval_seals_a_partial_job(fake: FakeKlaviyo) -> None:
    """A partial subscription job goes out once its oldest call is flush_interval old."""
    client = client_for(fake, flush_interval=0.05)
    delivery = client.subscribe(email="a@example.com")
    assert delivery.wait(timeout=10).status is DeliveryStatus.DELIVERED
    client.close()


def test_close_sends_pending_subscriptions(fake: FakeKlaviyo) -> None:
    """close() sends queued subscriptions and unsubscriptions before the worker stops."""
    seen: list[Delivery] = []
    client = client_for(fake, on_delivery=seen.append)
    calls = [
        client.subscribe(email="a@example.com", list_id="News"),
        client.unsubscribe(email="b@example.com"),
    ]
    client.close()
    assert [c.wait(timeout=0).status for c in calls] == [DeliveryStatus.DELIVERED] * 2
    assert len(seen) == 2
    assert len(sent(fake, SUBSCRIBE_PATH, UNSUBSCRIBE_PATH)) == 2


def test_close_drops_what_it_cannot_send() -> None:
    """Subscriptions still unsent at shutdown_timeout end dropped with the shutdown reason."""
    client = Client(
        PUBLIC_KEY,
        PRIVATE_KEY,
        base_url="http://127.0.0.1:9",
        shutdown_timeout=0.2,
        max_retries=0,
        flush_interval=60.0,
    )
    delivery = client.subscribe(email="a@example.com")
    client.close()
    final = delivery.wait(timeout=5)
    assert final.status in (DeliveryStatus.DROPPED, DeliveryStatus.FAILED)
    assert client.stats.queued == 0


# -- the blueprint's identify.subscribe option ------------------------------------------


def identify(**traits: Any) -> Any:
    return build_message("identify", user_id="u-1", traits={"email": "a@example.com", **traits})


def test_identify_subscribes_only_when_configured(fake: FakeKlaviyo) -> None:
    """By default a newsletter trait only updates the profile: no subscription is sent."""
    assert default_blueprint().identify.subscribe is None
    assert (
        len(compile_blueprint(default_blueprint()).decide(identify(newsletter=True)).objects) == 1
    )
    client = client_for(fake, sync_mode=True)
    client.identify("u-1", {"email": "a@example.com", "newsletter": True})
    assert [r.path for r in fake.requests] == ["/api/profile-import"]


def test_identify_with_the_trait_subscribes_after_the_profile(fake: FakeKlaviyo) -> None:
    """Configured, an identify with the trait true imports the profile, then subscribes it."""
    blueprint = Blueprint.from_dict(NEWSLETTER)
    for sync_mode in (True, False):
        fake.reset()
        client = client_for(fake, blueprint=blueprint, sync_mode=sync_mode)
        delivery = client.identify("u-1", {"email": "a@example.com", "newsletter": True})
        client.close()
        assert delivery.wait(timeout=5).status is DeliveryStatus.DELIVERED
        imports = "/api/profile-import" if sync_mode else "/api/profile-bulk-import-jobs"
        assert [r.path for r in sent(fake, imports, SUBSCRIBE_PATH)] == [imports, SUBSCRIBE_PATH]
        profile = fake.profile_for(email="a@example.com", external_id="u-1")
        assert profile is not None
        assert profile.lists == ("News",)


@pytest.mark.parametrize(
    ("traits", "consent"),
    [
        ({"newsletter": False}, None),
        ({}, None),
        ({"newsletter": "yes"}, None),
        ({"newsletter": True}, {"marketing": False}),
    ],
)
def test_no_subscription_without_a_true_trait_and_consent(
    traits: dict[str, Any], consent: dict[str, bool] | None
) -> None:
    """Only the trait's value true subscribes, and never when marketing consent is denied."""
    message = build_message(
        "identify", user_id="u-1", traits={"email": "a@example.com", **traits}, consent=consent
    )
    decision = compile_blueprint(Blueprint.from_dict(NEWSLETTER)).decide(message)
    assert not any(isinstance(obj, Subscription) for obj in decision.objects)


def test_consent_denied_identify_sends_nothing(fake: FakeKlaviyo) -> None:
    """An identify with marketing denied is dropped whole, so its trait subscribes nobody."""
    client = client_for(fake, sync_mode=True, blueprint=Blueprint.from_dict(NEWSLETTER))
    delivery = client.identify(
        "u-1", {"email": "a@example.com", "newsletter": True}, consent={"marketing": False}
    )
    assert delivery.status is DeliveryStatus.DROPPED
    assert fake.requests == []


def test_channels_without_an_identifier_are_left_out() -> None:
    """A configured sms channel applies only when the identify carries a phone number."""
    blueprint = Blueprint.from_dict(
        {"identify": {"subscribe": {"trait": "newsletter", "channels": ["email", "sms"]}}}
    )
    (_, sub) = compile_blueprint(blueprint).decide(identify(newsletter=True)).objects
    assert isinstance(sub, Subscription)
    assert (sub.channels, sub.phone_number, sub.list_id) == (("email",), None, None)
    phone_only = build_message(
        "identify", traits={"phone": "+14155550100", "newsletter": True}, user_id="u"
    )
    (_, sub) = compile_blueprint(blueprint).decide(phone_only).objects
    assert isinstance(sub, Subscription)
    assert (sub.channels, sub.email) == (("sms",), None)
    external_only = build_message("identify", user_id="u", traits={"newsletter": True})
    assert len(compile_blueprint(blueprint).decide(external_only).objects) == 1


def test_subscribe_setting_round_trips_through_a_file() -> None:
    """identify.subscribe is read, written by to_dict and read back to an equal blueprint."""
    data = {
        "identify": {
            "subscribe": {
                "trait": "sms_optin",
                "list_id": "SmsList",
                "channels": ["sms", "sms_transactional"],
                "custom_source": "Checkout",
            }
        }
    }
    blueprint = Blueprint.from_dict(data)
    assert blueprint.to_dict()["identify"] == {"enabled": True, **data["identify"]}
    assert Blueprint.from_dict(blueprint.to_dict()) == blueprint


def test_subscribe_setting_problems_are_all_reported() -> None:
    """Every bad field of identify.subscribe is reported with its path, in one error."""
    bad = {"list_id": "", "channels": ["email", "push"], "custom_source": 3, "when": "now"}
    with pytest.raises(BlueprintError) as caught:
        Blueprint.from_dict({"identify": {"subscribe": bad}})
    text = str(caught.value)
    for fragment in (
        "identify.subscribe: missing key 'trait'",
        "identify.subscribe.list_id: expected a non-empty string",
        "identify.subscribe.channels: expected a non-empty list",
        "identify.subscribe.custom_source: expected a non-empty string",
        "identify.subscribe.when: unknown key",
    ):
        assert fragment in text


def test_explain_shows_the_subscription_request(fake: FakeKlaviyo) -> None:
    """explain lists the subscription after the profile import, with the body that is sent."""
    client = client_for(fake, blueprint=Blueprint.from_dict(NEWSLETTER))
    explanation = client.explain("identify", "u-1", {"email": "a@example.com", "newsletter": True})
    paths = [r.path for r in explanation.requests]
    assert paths == ["/api/profile-import", SUBSCRIBE_PATH]
    assert_valid(SUBSCRIBE_PATH, explanation.requests[1].body)
    client.close()
    assert fake.requests == []


def test_partial_400_fails_only_the_named_profile(
    fake: FakeKlaviyo, caplog: pytest.LogCaptureFixture
) -> None:
    """A 400 naming one profile of a subscription job fails that call; the rest is resent."""
    pointer = "/data/attributes/profiles/data/1/attributes/email"
    refuse_item(fake, pointer, "This email address is not deliverable.")
    client = client_for(fake)
    calls = [client.subscribe(email=f"p{i}@example.com", list_id="News") for i in range(3)]
    close_and_check_middle_refused(client, calls, "This email address is not deliverable.")
    requests = sent(fake, SUBSCRIBE_PATH)
    assert [r.status for r in requests] == [400, 202]
    assert job_sizes(requests) == [3, 2]
    assert fake.profile_for(email="p1@example.com") is None
    assert fake.profile_for(email="p2@example.com").lists == ("News",)  # type: ignore[union-attr]
    assert client.stats.failed_by_reason == {"HTTP 400": 1}
    assert caplog.text.count("refused some items") == 1


def test_a_400_naming_every_profile_fails_that_job_only(fake: FakeKlaviyo) -> None:
    """Nothing is left to resend; other jobs and the worker carry on."""
    pointer = "/data/attributes/profiles/data/0/attributes/email"
    refuse_item(fake, pointer, "This email address is not deliverable.")
    client = client_for(fake)
    bad = client.subscribe(email="bad@example.com", list_id="A")
    good = client.subscribe(email="good@example.com", list_id="B")
    assert client.flush(timeout=10)
    later = client.subscribe(email="later@example.com", list_id="B")
    client.close()
    assert bad.wait(10).reason == "This email address is not deliverable."
    assert good.wait(10).status is DeliveryStatus.DELIVERED
    assert later.wait(10).status is DeliveryStatus.DELIVERED
    assert [r.status for r in sent(fake, SUBSCRIBE_PATH)] == [400, 202, 202]
