"""The caller's thread checks and copies what is sent, and only that; the worker maps later.

Background mode checks a call in full on the caller's line (``CompiledBlueprint.prepare``) but, for
simple rules, leaves building the Klaviyo objects to the worker; and it cleans only the
properties the call's rule reads. These tests pin what a user can see of that: errors
still come at the call, later changes to the caller's dicts never reach Klaviyo, and
values that are never sent are neither checked nor held.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import pytest

from klaviyo_signal import (
    Blueprint,
    Client,
    Delivery,
    DeliveryStatus,
    Rule,
    ValidationError,
    default_blueprint,
)
from klaviyo_signal._blueprint.record import fields
from klaviyo_signal.testing import FakeKlaviyo
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY, assert_valid

BULK = "/api/event-bulk-create-jobs"


def client_for(fake: FakeKlaviyo, blueprint: Blueprint | None = None) -> Client:
    return Client(
        PUBLIC_KEY,
        PRIVATE_KEY,
        base_url=fake.url,
        blueprint=blueprint or default_blueprint(),
        flush_interval=60.0,
    )


def order(price: Any = 10.0) -> dict[str, Any]:
    return {
        "order_id": "A-1",
        "revenue": 20.0,
        "currency": "USD",
        "products": [{"sku": "S-1", "price": price}],
    }


def queue_pending(client: Client, event: str, properties: dict[str, Any]) -> Delivery:
    """Queue a simple call's record the way CompiledBlueprint.prepare would, and wait for
    its outcome."""
    record = fields(
        ("track", event),
        (None, None, "u-1", None),
        datetime.now(timezone.utc),
        "m-1",
        None,
        None,
        None,
        [part for pair in properties.items() for part in pair],
    )
    return client._queued(record, 0, named=True).wait(10)


def sent_properties(fake: FakeKlaviyo) -> list[dict[str, Any]]:
    for request in fake.requests:
        assert_valid(request.path, request.body)
    return [event.properties for event in fake.events]


def test_later_changes_to_the_callers_dicts_are_not_sent(fake: FakeKlaviyo) -> None:
    client = client_for(fake)
    properties = order()
    traits = {"email": "ana@example.com"}
    track = client.track("Order Completed", properties, traits=traits, user_id="u-1")
    page_props = {"url": "https://shop.example.com/a", "title": "A"}
    page = client.page("Home", page_props, user_id="u-1")
    properties["revenue"] = 999.0
    properties["order_id"] = "CHANGED"
    traits["email"] = "someone-else@example.com"
    page_props["url"] = "https://changed.example.com"
    assert client.flush(timeout=30)
    client.close()
    assert track.wait(10).status is DeliveryStatus.DELIVERED
    assert page.wait(10).status is DeliveryStatus.DELIVERED
    page_view, purchase = sorted(fake.events, key=lambda e: e.metric)
    assert purchase.properties["order_id"] == "A-1"
    assert purchase.value == 20.0
    assert purchase.profile.email == "ana@example.com"
    assert page_view.properties["url"] == "https://shop.example.com/a"


def test_values_the_rule_does_not_send_are_not_checked(fake: FakeKlaviyo) -> None:
    """The default Order Completed rule sends order_id, revenue and currency only."""
    client = client_for(fake)
    delivery = client.track("Order Completed", order(price=math.nan), user_id="u-1")
    assert client.flush(timeout=30)
    client.close()
    assert delivery.wait(10).status is DeliveryStatus.DELIVERED
    (properties,) = sent_properties(fake)
    assert set(properties) == {"order_id", "revenue", "currency", "consent"}


def test_values_the_rule_sends_are_checked_at_the_call(fake: FakeKlaviyo) -> None:
    keep_all = Blueprint(rules={"Order Completed": Rule(metric="purchase")})
    client = client_for(fake, keep_all)
    with pytest.raises(ValidationError, match=r"properties\.products\[0\]\.price: nan"):
        client.track("Order Completed", order(price=math.nan), user_id="u-1")
    client.close()
    assert fake.requests == []


def test_a_dropped_event_is_dropped_whatever_its_properties(fake: FakeKlaviyo) -> None:
    client = client_for(fake)
    delivery = client.track("Coupon Clipped", {"bad": math.inf}, user_id="u-1")
    client.close()
    assert delivery.status is DeliveryStatus.DROPPED
    assert "no rule" in (delivery.reason or "")


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"revenue": "twenty"}, r"properties\.revenue: must be a number"),
        ({"currency": "usd"}, r"properties\.currency: must be an ISO 4217 currency code"),
    ],
)
def test_bad_values_fail_at_the_call_in_background_mode(
    fake: FakeKlaviyo, changes: dict[str, Any], error: str
) -> None:
    client = client_for(fake)
    with pytest.raises(ValidationError, match=error):
        client.track("Order Completed", {**order(), **changes}, user_id="u-1")
    assert client.flush(timeout=10)
    client.close()
    assert fake.requests == []
    assert client.stats.queued == 0


def test_traits_beyond_identifiers_are_mapped_on_the_callers_thread(fake: FakeKlaviyo) -> None:
    client = client_for(fake)
    with pytest.raises(ValidationError, match=r"traits\.firstName: must be a string"):
        client.track("Order Completed", order(), traits={"firstName": 7}, user_id="u-1")
    delivery = client.track("Order Completed", order(), traits={"firstName": "Ana"}, user_id="u-1")
    assert client.flush(timeout=30)
    client.close()
    assert delivery.wait(10).status is DeliveryStatus.DELIVERED
    (event,) = fake.events
    assert event.profile.attributes["first_name"] == "Ana"


def test_a_call_the_worker_cannot_build_fails_with_the_reason(
    fake: FakeKlaviyo, caplog: pytest.LogCaptureFixture
) -> None:
    """Never expected (prepare makes every check), but never silent either."""
    client = client_for(fake)
    # A value JSON cannot carry: CompiledBlueprint.prepare never queues such a call.
    final = queue_pending(client, "Order Completed", {"revenue": object()})
    client.close()
    assert final.status is DeliveryStatus.FAILED
    assert (final.reason or "").startswith("could not build the call's event: ")
    assert client.stats.failed == 1
    assert client.stats.failed_by_reason == {"internal error": 1}
    assert "could not be built" in caplog.text
    assert fake.requests == []


def test_context_keys_no_mapping_reads_are_not_checked(fake: FakeKlaviyo) -> None:
    """Segment's context (library, user agent...) is read for consent, traits and paths only."""
    client = client_for(fake)
    context = {
        "library": {"name": "analytics-python", "ratio": math.nan},
        "traits": {"email": "ana@example.com"},
    }
    delivery = client.track("Order Completed", order(), context=context)
    assert client.flush(timeout=30)
    client.close()
    assert delivery.wait(10).status is DeliveryStatus.DELIVERED
    (event,) = fake.events
    assert event.profile.email == "ana@example.com"


def test_context_keys_a_rule_reads_are_checked(fake: FakeKlaviyo) -> None:
    client = client_for(fake)
    with pytest.raises(ValidationError, match=r"context\.page\.url: nan is not a finite number"):
        client.page("Home", context={"page": {"url": math.nan}}, user_id="u-1")
    denied = client.track(
        "Order Completed",
        order(),
        user_id="u-1",
        context={"consent": {"categoryPreferences": {"marketing": False}}},
    )
    client.close()
    assert denied.status is DeliveryStatus.DROPPED
    assert fake.requests == []


def test_a_mapper_sees_the_whole_context(fake: FakeKlaviyo) -> None:
    seen: list[Any] = []

    def mapper(message: Any) -> dict[str, Any]:
        seen.append(dict(message.context))
        return {"library": message.context["library"]["name"]}

    client = client_for(fake, default_blueprint().enable("Signed Up", mapper=mapper))
    client.track("Signed Up", user_id="u-1", context={"library": {"name": "x"}, "ip": "1.2.3.4"})
    client.close()
    assert seen == [{"library": {"name": "x"}, "ip": "1.2.3.4"}]
    (event,) = fake.events
    assert event.properties["library"] == "x"


def test_identify_and_explain_read_the_same_context(fake: FakeKlaviyo) -> None:
    client = client_for(fake)
    call = {"context": {"library": {"ratio": math.nan}}, "message_id": "m-1"}
    explained = client.explain("identify", "u-1", {"email": "ana@example.com"}, **call)
    delivery = client.identify("u-1", {"email": "ana@example.com"}, **call)
    client.close()
    assert explained.status == "send"
    assert delivery.wait(10).status is DeliveryStatus.DELIVERED
    with pytest.raises(ValidationError, match=r"context\.traits: must be an object"):
        client_for(fake).identify("u-1", context={"traits": "ana"})


@pytest.mark.parametrize(
    ("name", "error"),
    [("", "event: must not be empty"), ("x" * 200, "event: 'x.* is 200 characters")],
)
def test_bad_event_names_say_so_under_a_forwarding_blueprint(
    fake: FakeKlaviyo, name: str, error: str
) -> None:
    forward = Blueprint.from_dict({"version": 1, "catch_all": {"action": "forward"}})
    client = client_for(fake, forward)
    with pytest.raises(ValidationError, match=error):
        client.track(name, user_id="u-1")
    client.close()


def test_one_persons_events_share_one_bulk_item_whichever_route(fake: FakeKlaviyo) -> None:
    """Page views (mapped on the caller) and orders (built on the worker) group together."""
    client = client_for(fake)
    for _ in range(3):
        client.page("Home", {"url": "https://shop.example.com/"}, user_id="u-1")
        client.track("Order Completed", order(), user_id="u-1")
    client.close()
    (request,) = [r for r in fake.requests if r.path == BULK]
    items = request.body["data"]["attributes"]["events-bulk-create"]["data"]  # type: ignore[index,call-overload]
    assert [len(item["attributes"]["events"]["data"]) for item in items] == [6]


def test_a_call_whose_rule_is_gone_fails_with_the_reason(fake: FakeKlaviyo) -> None:
    client = client_for(fake)
    final = queue_pending(client, "Never Enabled", {})
    client.close()
    assert final.status is DeliveryStatus.FAILED
    assert "could not build the call's event" in (final.reason or "")


def test_an_event_over_5_mb_raises_at_the_call(fake: FakeKlaviyo) -> None:
    """An event too large for any request raises ValidationError at the call; others go on."""
    keep_all = Blueprint(rules={"Big": Rule(metric="big")})
    client = client_for(fake, keep_all)
    huge = {f"p{i}": "x" * 99_000 for i in range(60)}  # each value legal, ~6 MB together
    with pytest.raises(ValidationError, match=r"^properties: the event takes \d+ bytes as JSON"):
        client.track("Big", huge, user_id="u-1")
    small = client.track("Big", {"n": 1}, user_id="u-2")
    client.close()
    assert small.wait(10).status is DeliveryStatus.DELIVERED
    assert client.stats.failed_by_reason == {}


def test_a_queued_delivery_built_fast_equals_one_built_by_its_constructor() -> None:
    """Delivery.queued (the caller's hot path) makes the same value, repr and hash."""
    from klaviyo_signal._delivery.delivery import Board, Ticket

    ticket = Ticket(Board(), 7, "m-7")
    fast = Delivery.queued("m-7", ticket)
    slow = Delivery("m-7", DeliveryStatus.QUEUED, ticket=ticket)
    assert fast == slow
    assert repr(fast) == repr(slow)
    assert hash(fast) == hash(slow)
    assert fast.wait(0) is fast  # still queued: the ticket is its own
