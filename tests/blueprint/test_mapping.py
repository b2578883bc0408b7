"""The default blueprint, seen on the wire: what each call becomes in Klaviyo."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from klaviyo_signal import Client, DeliveryStatus, ValidationError, default_blueprint
from klaviyo_signal.testing import FakeKlaviyo
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY, Capture, assert_valid


def client_for(url: str, **options: Any) -> Client:
    return Client(PUBLIC_KEY, PRIVATE_KEY, base_url=url, sync_mode=True, **options)


def sent(fake: FakeKlaviyo) -> list[tuple[str, Any]]:
    """Every accepted request as (path, body), each checked against Klaviyo's schema."""
    out = []
    for request in fake.requests:
        assert request.status in (200, 201, 202), request
        assert_valid(request.path.rstrip("/"), request.body)
        out.append((request.path, request.body))
    return out


def event_attributes(fake: FakeKlaviyo) -> dict[str, Any]:
    ((path, body),) = sent(fake)
    assert path == "/api/events"
    attributes: dict[str, Any] = body["data"]["attributes"]
    return attributes


def test_page_maps_url_title_and_name(fake: FakeKlaviyo) -> None:
    """page becomes page_view with url, title and name, and nothing else by default."""
    client_for(fake.url).page(
        "Pricing",
        {"url": "https://shop.example/pricing", "title": "Pricing", "referrer": "x"},
        anonymous_id="anon-1",
        consent={"marketing": True},
    )
    attributes = event_attributes(fake)
    assert attributes["metric"]["data"]["attributes"]["name"] == "page_view"
    assert attributes["properties"] == {
        "url": "https://shop.example/pricing",
        "title": "Pricing",
        "name": "Pricing",
        "consent": {"marketing": True},
    }
    assert attributes["profile"]["data"]["attributes"] == {"anonymous_id": "anon-1"}


def test_page_falls_back_to_context_page(fake: FakeKlaviyo) -> None:
    """Without url/title in properties, page reads them from context['page']."""
    client_for(fake.url).page(
        context={"page": {"url": "https://shop.example/", "title": "Home", "path": "/"}},
        anonymous_id="anon-1",
    )
    assert event_attributes(fake)["properties"] == {
        "url": "https://shop.example/",
        "title": "Home",
        "consent": {},
    }


def test_product_viewed_keeps_only_documented_fields(fake: FakeKlaviyo) -> None:
    """Product Viewed becomes product_viewed with only product_id, name and price."""
    client_for(fake.url).track(
        "Product Viewed",
        {"product_id": "p-1", "name": "Mug", "price": 12.5, "sku": "M-1", "category": "Kitchen"},
        user_id="u-1",
    )
    attributes = event_attributes(fake)
    assert attributes["metric"]["data"]["attributes"]["name"] == "product_viewed"
    assert attributes["properties"] == {
        "product_id": "p-1",
        "name": "Mug",
        "price": 12.5,
        "consent": {},
    }


def test_order_completed_feeds_value_and_currency(fake: FakeKlaviyo) -> None:
    """Order Completed becomes purchase; revenue and currency feed value/value_currency."""
    client_for(fake.url).track(
        "Order Completed",
        {"order_id": "o-1", "revenue": 42.5, "currency": "GBP", "products": [{"sku": "a"}]},
        traits={"email": "jane@example.com"},
        message_id="msg-1",
    )
    attributes = event_attributes(fake)
    assert attributes["metric"]["data"]["attributes"]["name"] == "purchase"
    assert attributes["properties"] == {
        "order_id": "o-1",
        "revenue": 42.5,
        "currency": "GBP",
        "consent": {},
    }
    assert (attributes["value"], attributes["value_currency"]) == (42.5, "GBP")
    assert attributes["unique_id"] == "msg-1"
    (event,) = fake.events_for(email="jane@example.com")
    assert event.value == 42.5


def test_decimal_revenue_is_exact_on_the_wire(capture: Capture) -> None:
    """A Decimal revenue reaches the wire digit for digit, not rounded through float."""
    client_for(capture.url).track(
        "Order Completed",
        {"order_id": "o-1", "revenue": Decimal("1234567890.123456789012"), "currency": "USD"},
        user_id="u-1",
    )
    ((_, _, body),) = capture.requests
    assert b'"value":1234567890.123456789012' in body
    assert b'"revenue":1234567890.123456789012' in body
    assert_valid("/api/events", json.loads(body))


def test_revenue_that_is_not_a_number_is_refused(fake: FakeKlaviyo) -> None:
    """A string revenue raises at the call, naming the field, instead of losing attribution."""
    with pytest.raises(ValidationError, match=r"properties\.revenue: must be a number"):
        client_for(fake.url).track(
            "Order Completed", {"revenue": "42.50", "currency": "GBP"}, user_id="u-1"
        )
    assert fake.requests == []


@pytest.mark.parametrize("currency", ["USD\n", "usd", "US", "USDX", " USD"])
def test_currency_that_is_not_a_code_is_refused(fake: FakeKlaviyo, currency: str) -> None:
    """A currency that is not exactly three capitals (a trailing newline too) raises."""
    with pytest.raises(ValidationError, match=r"properties\.currency: must be an ISO 4217"):
        client_for(fake.url).track(
            "Order Completed", {"revenue": 1.0, "currency": currency}, user_id="u-1"
        )
    assert fake.requests == []


def test_custom_event_is_dropped_with_how_to_enable(fake: FakeKlaviyo) -> None:
    """An event with no rule is dropped; the reason names it and says how to enable it."""
    delivery = client_for(fake.url).track("Signed Up", {"plan": "pro"}, user_id="u-1")
    assert delivery.status is DeliveryStatus.DROPPED
    assert delivery.reason is not None
    assert "'Signed Up'" in delivery.reason
    assert "default_blueprint().enable('Signed Up')" in delivery.reason
    assert fake.requests == []


def test_enable_forwards_all_properties_as_snake_case_metric(fake: FakeKlaviyo) -> None:
    """enable() forwards a custom event with all its properties as a snake_case metric."""
    blueprint = default_blueprint().enable("Signed Up")
    client_for(fake.url, blueprint=blueprint).track("Signed Up", {"plan": "pro"}, user_id="u-1")
    attributes = event_attributes(fake)
    assert attributes["metric"]["data"]["attributes"]["name"] == "signed_up"
    assert attributes["properties"] == {"plan": "pro", "consent": {}}


def test_enable_with_metric_and_disable(fake: FakeKlaviyo) -> None:
    """enable(metric=) names the metric; disable() drops a default event; both return copies."""
    base = default_blueprint()
    renamed = base.enable("Signed Up", metric="Account Created")
    without_orders = base.disable("Order Completed")
    assert base == default_blueprint()
    client = client_for(fake.url, blueprint=renamed)
    client.track("Signed Up", user_id="u-1")
    assert event_attributes(fake)["metric"]["data"]["attributes"]["name"] == "Account Created"
    dropped = client_for(fake.url, blueprint=without_orders).track(
        "Order Completed", {"revenue": 1}, user_id="u-1"
    )
    assert dropped.status is DeliveryStatus.DROPPED
    assert dropped.reason is not None
    assert "disabled" in dropped.reason


def test_identify_maps_segment_traits(fake: FakeKlaviyo) -> None:
    """identify maps Segment traits to Klaviyo attributes and location; the rest to properties."""
    client_for(fake.url).identify(
        "u-1",
        {
            "email": "jane@example.com",
            "phone": "+44 7911 123456",
            "firstName": "Jane",
            "last_name": "Doe",
            "title": "CTO",
            "company": {"name": "Acme", "plan": "gold"},
            "avatar": "https://img.example/jane.png",
            "address": {
                "street": "1 High St",
                "city": "London",
                "state": "LDN",
                "postalCode": "N1 1AA",
                "country": "GB",
            },
            "plan": "pro",
        },
        anonymous_id="anon-1",
    )
    (link_path, link), (path, body) = sent(fake)
    # The default revision's profile-import takes no anonymous_id: it is linked first,
    # through the client-side endpoint, with the other identifiers only.
    assert link_path == "/client/profiles?company_id=AbC123"
    assert link["data"]["attributes"] == {
        "email": "jane@example.com",
        "phone_number": "+447911123456",
        "external_id": "u-1",
        "anonymous_id": "anon-1",
    }
    assert path == "/api/profile-import"
    assert body["data"]["attributes"] == {
        "email": "jane@example.com",
        "phone_number": "+447911123456",
        "external_id": "u-1",
        "first_name": "Jane",
        "last_name": "Doe",
        "title": "CTO",
        "organization": "Acme",
        "image": "https://img.example/jane.png",
        "location": {
            "address1": "1 High St",
            "city": "London",
            "region": "LDN",
            "zip": "N1 1AA",
            "country": "GB",
        },
        "properties": {"plan": "pro"},
    }


def test_identify_reads_organization_and_context_traits(fake: FakeKlaviyo) -> None:
    """Traits may come from context['traits']; a plain organization trait is used too."""
    client_for(fake.url).identify(
        context={"traits": {"email": "a@example.com", "organization": "Acme", "image": "i"}}
    )
    ((_, body),) = sent(fake)
    assert body["data"]["attributes"] == {
        "email": "a@example.com",
        "organization": "Acme",
        "image": "i",
    }


def test_anonymous_history_merges_on_identify(fake: FakeKlaviyo) -> None:
    """A page view by anonymous_id, then identify with both ids, land on one profile."""
    client = client_for(fake.url)
    client.page("Home", anonymous_id="anon-1")
    client.identify("u-1", {"email": "jane@example.com"}, anonymous_id="anon-1")
    client.track("Product Viewed", {"product_id": "p"}, user_id="u-1")
    (profile,) = fake.profiles
    assert profile.email == "jane@example.com"
    assert [e.metric for e in fake.events_for(email="jane@example.com")] == [
        "page_view",
        "product_viewed",
    ]


def test_event_traits_go_to_the_event_profile(fake: FakeKlaviyo) -> None:
    """Traits given with track are sent on the event's profile, not dropped."""
    client_for(fake.url).track(
        "Product Viewed", {"product_id": "p"}, traits={"email": "a@example.com", "vip": True}
    )
    profile = event_attributes(fake)["profile"]["data"]["attributes"]
    assert profile == {"email": "a@example.com", "properties": {"vip": True}}


def test_consent_state_travels_on_every_event(fake: FakeKlaviyo) -> None:
    """The consent given is forwarded as the event property 'consent'."""
    client_for(fake.url).track(
        "Product Viewed",
        {"product_id": "p"},
        user_id="u-1",
        context={"consent": {"categoryPreferences": {"marketing": True, "analytics": False}}},
    )
    assert event_attributes(fake)["properties"]["consent"] == {
        "marketing": True,
        "analytics": False,
    }


@pytest.mark.parametrize("kind", ["identify", "track", "page"])
def test_marketing_denied_sends_nothing(fake: FakeKlaviyo, kind: str) -> None:
    """Marketing consent denied drops every kind of call, with a reason naming consent."""
    client = client_for(fake.url)
    consent = {"marketing": False}
    if kind == "identify":
        delivery = client.identify("u-1", consent=consent)
    elif kind == "track":
        delivery = client.track("Order Completed", {"revenue": 1}, user_id="u-1", consent=consent)
    else:
        delivery = client.page(user_id="u-1", consent=consent)
    assert delivery.status is DeliveryStatus.DROPPED
    assert delivery.reason is not None
    assert "consent" in delivery.reason
    assert fake.requests == []


def test_require_consent_drops_calls_without_a_grant(fake: FakeKlaviyo) -> None:
    """With require_consent=True only calls carrying a marketing grant are sent."""
    client = client_for(fake.url, require_consent=True)
    assert client.page(user_id="u-1").status is DeliveryStatus.DROPPED
    granted = client.page(user_id="u-1", consent={"marketing": True})
    assert granted.status is DeliveryStatus.DELIVERED
    assert len(fake.requests) == 1


def test_bad_input_raises_even_for_a_dropped_event(fake: FakeKlaviyo) -> None:
    """Input is checked before the blueprint: a custom event with a bad phone still raises."""
    seen: list[object] = []
    client = client_for(fake.url, on_delivery=seen.append)
    with pytest.raises(ValidationError, match=r"traits\.phone"):
        client.track("Signed Up", traits={"phone": "call me"})
    with pytest.raises(ValidationError, match="no profile identifier"):
        client.track("Order Completed", {"revenue": 1})
    assert seen == []
    assert fake.requests == []


def test_page_context_that_is_not_an_object_is_refused(fake: FakeKlaviyo) -> None:
    """A context['page'] given as a string raises instead of silently losing url and title."""
    with pytest.raises(ValidationError, match=r"context\.page: must be an object"):
        client_for(fake.url).page("Home", context={"page": "https://x.example/"}, user_id="u")
    assert fake.requests == []
