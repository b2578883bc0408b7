"""The built-in variants: the default mapping and klaviyo_ecommerce, valid for Klaviyo."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klaviyo_signal import (
    Blueprint,
    ConfigurationError,
    blueprint_for_variant,
    default_blueprint,
)
from klaviyo_signal._explain import Explanation
from tests.conftest import explain_checked

VARIANTS = ["default", "klaviyo_ecommerce"]


def run(variant: str, kind: Any, *args: Any, **kwargs: Any) -> Explanation:
    return explain_checked(default_blueprint(variant), kind, *args, **kwargs)


def events(explanation: Explanation) -> list[tuple[str, dict[str, Any], Any, str]]:
    """Each event as (metric, properties, value, unique_id)."""
    out = []
    for request in explanation.requests:
        body: Any = request.body
        a = body["data"]["attributes"]
        out.append(
            (
                a["metric"]["data"]["attributes"]["name"],
                a["properties"],
                a.get("value"),
                a["unique_id"],
            )
        )
    return out


ORDER = {
    "order_id": "o-1",
    "total": 30,
    "currency": "USD",
    "coupon": "SAVE",
    "products": [
        {"product_id": "p-1", "sku": "S1", "name": "Mug", "price": 10, "quantity": 2},
        {"product_id": "p-2", "name": "Tee", "price": 10},
    ],
}


def test_default_is_the_documented_mapping() -> None:
    """default_blueprint() and default_blueprint('default') are one and the same mapping."""
    assert default_blueprint() == default_blueprint("default") == blueprint_for_variant("default")
    assert (
        run("default", "track", "Order Completed", ORDER)
        .requests[0]
        .body["data"][  # type: ignore[index, call-overload]
            "attributes"
        ]["metric"]["data"]["attributes"]["name"]
        == "purchase"
    )
    assert run("default", "track", "Product Added", {"sku": "a"}).status == "drop"


@pytest.mark.parametrize(
    ("event", "metric"),
    [
        ("Product Viewed", "Viewed Product"),
        ("Product Added", "Added to Cart"),
        ("Checkout Started", "Started Checkout"),
        ("Order Completed", "Placed Order"),
    ],
)
def test_ecommerce_metric_names(event: str, metric: str) -> None:
    """klaviyo_ecommerce sends the metric names Klaviyo's prebuilt flows listen for."""
    explanation = run("klaviyo_ecommerce", "track", event, {"price": 10, "currency": "USD"})
    assert events(explanation)[0][0] == metric


def test_ecommerce_order_sends_placed_order_and_ordered_products() -> None:
    """Order Completed becomes Placed Order (value from total) and one Ordered Product per line."""
    explanation = run("klaviyo_ecommerce", "track", "Order Completed", ORDER)
    (placed, first, second) = events(explanation)
    assert placed[0] == "Placed Order"
    assert placed[1]["OrderId"] == "o-1"
    assert placed[1]["DiscountCode"] == "SAVE"
    assert placed[2] == 30
    assert first == (
        "Ordered Product",
        {
            "ProductID": "p-1",
            "SKU": "S1",
            "ProductName": "Mug",
            "ItemPrice": 10,
            "Quantity": 2,
            "OrderId": "o-1",
            "consent": {},
        },
        10,
        "m-1:0",
    )
    assert second[3] == "m-1:1"


def test_ecommerce_revenue_wins_over_total() -> None:
    """When both are given, revenue feeds value rather than total."""
    explanation = run(
        "klaviyo_ecommerce", "track", "Order Completed", {"revenue": Decimal("9.99"), "total": 12}
    )
    assert str(events(explanation)[0][2]) == "9.99"  # the digits sent


def test_unknown_variant_lists_the_known_ones() -> None:
    """An unknown variant raises a ValueError that lists every known variant."""
    with pytest.raises(ConfigurationError, match="known variants: 'default', 'klaviyo_ecommerce'"):
        default_blueprint("shopify")
    with pytest.raises(ValueError, match="unknown blueprint variant 'x'"):
        blueprint_for_variant("x")


def test_variants_are_fresh_values() -> None:
    """Each call returns an equal, independent blueprint."""
    assert isinstance(blueprint_for_variant("klaviyo_ecommerce"), Blueprint)
    assert default_blueprint("klaviyo_ecommerce") == default_blueprint("klaviyo_ecommerce")
    assert default_blueprint("klaviyo_ecommerce") != default_blueprint()


money = st.one_of(
    st.integers(0, 10**6),
    st.floats(0, 1e6, allow_nan=False),
    st.decimals(0, 10**6, places=2, allow_nan=False),
)
scalars = st.one_of(st.none(), st.booleans(), st.text(max_size=10), money)
products = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "product_id": st.text(max_size=5),
            "sku": st.text(max_size=5),
            "name": st.text(max_size=5),
            "price": money,
            "quantity": st.integers(0, 9),
            "url": st.text(max_size=5),
        },
    ),
    max_size=4,
)
properties = st.fixed_dictionaries(
    {},
    optional={
        "order_id": st.text(max_size=5),
        "revenue": money,
        "total": money,
        "price": money,
        "value": money,
        "currency": st.sampled_from(["USD", "EUR", "GBP"]),
        "products": products,
        "url": st.text(max_size=5),
        "title": st.text(max_size=5),
        "coupon": scalars,
        "extra": scalars,
    },
)
calls = st.one_of(
    st.tuples(
        st.just("track"),
        st.sampled_from(
            ["Product Viewed", "Product Added", "Checkout Started", "Order Completed", "Other"]
        ),
        properties,
    ),
    st.tuples(
        st.just("page"), st.none() | st.text(min_size=1, max_size=5).filter(str.strip), properties
    ),
)
traits = st.fixed_dictionaries(
    {"email": st.just("jane@example.com")},
    optional={
        "firstName": st.text(max_size=5),
        "company": st.text(max_size=5) | st.fixed_dictionaries({"name": st.text(max_size=5)}),
        "address": st.fixed_dictionaries(
            {}, optional={"city": st.text(max_size=5), "postalCode": st.text(max_size=5)}
        ),
        "plan": scalars,
    },
)


@pytest.mark.parametrize("variant", VARIANTS)
@settings(max_examples=60, deadline=None)
@given(call=calls, traits=traits | st.none())
def test_every_body_validates_against_klaviyo_schemas(
    variant: str, call: tuple[str, Any, Any], traits: Any
) -> None:
    """Every event and profile body either variant produces is valid for Klaviyo's API."""
    kind, first, props = call
    run(variant, kind, first, props, traits=traits)
    run(variant, "identify", "u-1", traits)
