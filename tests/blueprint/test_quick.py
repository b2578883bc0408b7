"""The caller's fast lane makes a call faster, never different.

``_blueprint.quick.quick_track`` packs the common background ``track`` call straight into its queue
item. Whenever it takes a call, the full route (``build_message`` -> ``CompiledBlueprint.prepare``
-> ``_blueprint.events.pack``) must take it too and queue the very same item; whenever the full
route refuses a call, the lane must leave it to the full route (so the error is the same).
"""

from __future__ import annotations

import itertools
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klaviyo_signal import (
    Blueprint,
    CatchAll,
    Client,
    DeliveryStatus,
    Rule,
    ValidationError,
    default_blueprint,
)
from klaviyo_signal._blueprint.compiled import compile_blueprint
from klaviyo_signal._blueprint.quick import quick_track
from klaviyo_signal._blueprint.record import ITEM_TIME, MESSAGE_ID
from klaviyo_signal._calls.message import build_message
from klaviyo_signal._delivery.jobs import encode_queued
from klaviyo_signal.testing import FakeKlaviyo
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY

_TIME = ITEM_TIME - 2  # where the time is in the packed fields
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

_BASE = default_blueprint()
BLUEPRINTS = {
    "default": _BASE,
    "ecommerce": default_blueprint("klaviyo_ecommerce"),
    "forward": attrs.evolve(_BASE, catch_all=CatchAll(action="forward")),
    "custom": attrs.evolve(
        _BASE.enable("Signed Up", metric="signed_up"),
        rules={
            **_BASE.rules,
            "Refunded": Rule(
                metric="refund",
                value=("properties.amount", "properties.total"),
                value_currency="properties.currency",
            ),
        },
    ),
}
EVENTS = ["Order Completed", "Product Viewed", "Signed Up", "Refunded", "Checkout Started"]

good = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet="abcXYZ -1", max_size=8),
    st.sampled_from(["USD", "GBP", "A-1"]),
)
bad = st.one_of(
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(["usd", "USD\n", "EU", "", " ", "x" * 30_000, "\ud800"]),
    st.lists(good, max_size=2),
    st.dictionaries(st.text(max_size=3), good, max_size=2),
)
keys = st.sampled_from(
    ["order_id", "revenue", "currency", "amount", "total", "name", "price", "product_id", "é"]
)
properties = st.one_of(
    st.dictionaries(keys, st.one_of(good, good, good, good, good, good, bad), max_size=6),
    st.dictionaries(keys, good, max_size=6),
    st.none(),
    st.just([("revenue", 1)]),
)
good_ids = st.sampled_from(["u-1", "anon-7", None, None])
identifiers = st.one_of(
    good_ids, good_ids, good_ids, st.sampled_from(["", " ", "x" * 300, "ü", "\ud800", 4])
)
emails = st.sampled_from(
    ["jane@example.com", " jane@example.com", "jane", "", "ü@example.com", "\ud800@x.com", 5]
)
traits = st.one_of(
    st.just({"email": "jane@example.com"}),
    st.just({"email": "jane@example.com"}),
    st.builds(lambda e: {"email": e}, emails),
    st.none(),
    st.sampled_from(
        [{}, [], "", 0, {"email": None}, {"first_name": "Jane"}, {"phone": "+14155550100"}]
    ),
    st.builds(lambda e: {"email": e, "phone": "+14155550100"}, emails),
)
calls = st.fixed_dictionaries(
    {
        "event": st.sampled_from(EVENTS),
        "properties": properties,
        "traits": traits,
        "user_id": identifiers,
        "anonymous_id": identifiers,
    }
)


def full_route(blueprint: Blueprint, call: dict[str, Any]) -> tuple[tuple[object, ...], int] | str:
    """Pack a call as the full route does, or return the error it raises."""
    try:
        message = build_message(
            "track",
            reads=compile_blueprint(blueprint).reads("track", call["event"]),
            **call,
        )
        prepared = compile_blueprint(blueprint).prepare(message)
    except ValidationError as exc:
        return str(exc)
    if not isinstance(prepared, tuple):
        return "not a simple call"
    return prepared


def assert_same_as_full_route(
    blueprint: Blueprint, call: dict[str, Any], quick: tuple[tuple[object, ...], int]
) -> None:
    """The full route takes the call and queues the same item, written to the same bytes."""
    fields, size = quick
    ns: int = fields[_TIME]  # type: ignore[assignment]
    when = _EPOCH + timedelta(microseconds=ns // 1000)
    full = full_route(blueprint, {**call, "message_id": fields[MESSAGE_ID], "timestamp": when})
    assert not isinstance(full, str), full
    full_fields, full_size = full
    assert full_fields[_TIME] == when
    assert (_without_time(fields), size) == (_without_time(full_fields), full_size)
    rule = compile_blueprint(blueprint).rule_for(fields[:2])  # type: ignore[arg-type]
    assert encode_queued((0, (), *fields), rule) == encode_queued((0, (), *full_fields), rule)


def _without_time(fields: tuple[object, ...]) -> tuple[object, ...]:
    return fields[:_TIME] + fields[_TIME + 1 :]


@settings(max_examples=3000, deadline=None)
@given(name=st.sampled_from(sorted(BLUEPRINTS)), call=calls)
def test_the_lane_queues_what_the_full_route_queues(name: str, call: dict[str, Any]) -> None:
    """A call the lane takes is one the full route takes, packed to the same item."""
    blueprint = BLUEPRINTS[name]
    plan = compile_blueprint(blueprint).quick(call["event"])
    if plan is None:
        return
    quick = quick_track(
        plan, call["properties"], call["traits"], call["user_id"], call["anonymous_id"]
    )
    if quick is None:
        return
    assert_same_as_full_route(blueprint, call, quick)


def test_every_near_miss_of_the_common_call_agrees_with_the_full_route() -> None:
    """Over a grid of common calls and their near misses, lane and full route agree."""
    taken = 0
    grid = itertools.product(
        sorted(BLUEPRINTS),
        EVENTS,
        [
            None,
            {"order_id": "A-1", "revenue": 20.5, "currency": "USD", "products": [{"s": 1}]},
            {"revenue": 20, "total": 3, "amount": None, "currency": "GBP", "price": 1.5},
            {"revenue": True, "currency": "USD"},
            {"revenue": 1.0, "currency": "usd"},
            {"name": "Shoe", "price": math.inf, "product_id": "P-1"},
            {"name": "Schuh für Sie", "price": 2, "product_id": 7},
            {"plan": object()},
            {"name": "bad \ud800 decode", "order_id": "A-1"},
        ],
        [
            None,
            {},
            [],
            "",
            {"email": "jane@example.com"},
            {"email": "jane"},
            {"email": "\ud800@example.com"},
            {"first_name": "J"},
        ],
        ["u-1", None, 7, "\ud800"],
        [None, "anon-1"],
    )
    for name, event, props, traits, user_id, anonymous_id in grid:
        blueprint = BLUEPRINTS[name]
        call = {
            "event": event,
            "properties": props,
            "traits": traits,
            "user_id": user_id,
            "anonymous_id": anonymous_id,
        }
        plan = compile_blueprint(blueprint).quick(event)
        quick = None if plan is None else quick_track(plan, props, traits, user_id, anonymous_id)
        if quick is None:
            continue
        taken += 1
        assert_same_as_full_route(blueprint, call, quick)
    assert taken > 300, taken


def test_the_lane_takes_the_common_calls() -> None:
    """The shapes a web handler sends take the lane (the comparison above is not vacuous)."""
    blueprint = default_blueprint()
    plan = compile_blueprint(blueprint).quick("Order Completed")
    assert plan is not None
    order = {"order_id": "A-1", "revenue": 20.5, "currency": "USD", "products": [{"sku": "S"}]}
    for traits, user_id, anonymous_id in [
        ({"email": "jane@example.com"}, "u-1", None),
        (None, "u-1", None),
        ({}, None, "anon-1"),
    ]:
        assert quick_track(plan, order, traits, user_id, anonymous_id) is not None
    assert (
        compile_blueprint(blueprint).quick("Signed Up") is None
    )  # dropped: the full route says why
    assert compile_blueprint(blueprint).quick("") is None


@pytest.mark.parametrize(
    ("props", "traits", "user_id", "error"),
    [
        ({"revenue": "1"}, None, "u-1", r"properties\.revenue: must be a number"),
        ({"revenue": 1, "currency": "USD\n"}, None, "u-1", r"properties\.currency"),
        ({"revenue": math.nan}, None, "u-1", r"properties\.revenue: nan is not a finite"),
        ({}, {"email": "jane"}, None, r"traits\.email: 'jane' is not a valid email"),
        ({}, None, " ", r"user_id: must not be empty"),
        ({}, None, None, r"identifier"),
        ({}, [], "u-1", r"traits: must be a mapping"),
        ({}, {"email": "\ud800@example.com"}, None, r"traits\.email: the string contains a lone"),
        ({}, None, "\ud800", r"user_id: the string contains a lone surrogate"),
    ],
)
def test_bad_input_still_raises_the_full_routes_error(
    props: dict[str, Any], traits: Any, user_id: Any, error: str
) -> None:
    """Input the lane does not take still fails at the call, with the field and the rule."""
    with FakeKlaviyo() as fake:
        client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, flush_interval=60.0)
        try:
            with pytest.raises(ValidationError, match=error):
                client.track("Order Completed", props, traits=traits, user_id=user_id)
            delivery = client.track(
                "Order Completed",
                {"revenue": 2, "currency": "EUR", "order_id": "A-2"},
                traits={"email": "jane@example.com"},
                user_id="u-1",
            )
            assert client.flush(10)
            assert delivery.wait(10).status is DeliveryStatus.DELIVERED
        finally:
            client.close()
        (event,) = fake.events
        assert (event.value, event.value_currency) == (2, "EUR")
        assert event.properties == {
            "order_id": "A-2",
            "revenue": 2,
            "currency": "EUR",
            "consent": {},
        }
