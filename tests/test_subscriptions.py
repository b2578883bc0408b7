"""Subscribe/unsubscribe calls: the checks at the call and the job bodies Klaviyo receives."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from klaviyo_signal import ValidationError
from klaviyo_signal._subscriptions import (
    SUBSCRIBE_PATH,
    UNSUBSCRIBE_PATH,
    build_subscription,
    subscription_body,
)

from .conftest import assert_valid, schema_errors

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
