"""Blueprints in code: rules, property maps, mappers, the catch-all and the profile map."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import pytest

from klaviyo_signal import (
    Blueprint,
    CatchAll,
    IdentifyRule,
    ItemRule,
    Message,
    ProfileMap,
    PropertyMap,
    Rule,
    ValidationError,
    default_blueprint,
)
from klaviyo_signal._explain import Explanation
from klaviyo_signal._klaviyo.json import JSON
from tests.conftest import explain_checked


def run(blueprint: Blueprint, kind: Any, *args: Any, **kwargs: Any) -> Explanation:
    return explain_checked(blueprint, kind, *args, **kwargs)


def attributes(explanation: Explanation, index: int = 0) -> dict[str, Any]:
    body: Any = explanation.requests[index].body
    result: dict[str, Any] = body["data"]["attributes"]
    return result


def metric(explanation: Explanation, index: int = 0) -> str:
    name: str = attributes(explanation, index)["metric"]["data"]["attributes"]["name"]
    return name


def signed_up(message: Message) -> Mapping[str, JSON] | None:
    """A mapper: keeps the plan, drops internal test accounts."""
    if message.traits.get("internal"):
        return None
    return {"plan": message.properties.get("plan"), "source": message.context.get("app")}


def test_enable_with_a_mapper_uses_its_properties() -> None:
    """enable(mapper=) computes the event's properties with a plain function."""
    blueprint = default_blueprint().enable("Signed Up", mapper=signed_up)
    explanation = run(
        blueprint, "track", "Signed Up", {"plan": "pro", "x": 1}, context={"app": "web"}
    )
    assert explanation.status == "send"
    assert attributes(explanation)["properties"] == {
        "plan": "pro",
        "source": "web",
        "consent": {},
    }


def test_a_mapper_returning_none_drops_the_call() -> None:
    """A mapper that returns None drops the call with a reason naming the rule."""
    blueprint = default_blueprint().enable("Signed Up", mapper=signed_up)
    explanation = run(blueprint, "track", "Signed Up", traits={"internal": True})
    assert explanation.status == "drop"
    assert explanation.rule == "Signed Up"
    assert "mapper" in (explanation.reason or "")


def test_a_blueprint_wide_mapper_serves_every_rule_without_its_own() -> None:
    """Blueprint(mapper=) replaces the property mapping of every rule, page included."""
    blueprint = attrs.evolve(default_blueprint(), mapper=lambda message: {"kind": message.kind})
    explanation = run(blueprint, "page", "Home")
    assert attributes(explanation)["properties"] == {"kind": "page", "consent": {}}


def test_a_mapper_result_is_checked_like_input() -> None:
    """A mapper that returns NaN fails with the mapper's name in the error."""
    blueprint = default_blueprint().enable("Signed Up", mapper=lambda m: {"bad": float("nan")})
    with pytest.raises(ValidationError, match=r"mapper .*bad"):
        run(blueprint, "track", "Signed Up")


def test_enable_and_disable_return_new_blueprints() -> None:
    """enable/disable leave the original blueprint unchanged and keep an existing rule's map."""
    base = default_blueprint()
    disabled = base.disable("Product Viewed")
    enabled = disabled.enable("Product Viewed")
    assert base == default_blueprint()
    assert not disabled.rules["Product Viewed"].enabled
    assert enabled == base


def test_property_map_steps() -> None:
    """keep, drop, rename, sources, defaults and constants apply in that order."""
    rule = Rule(
        metric="m",
        properties=PropertyMap(
            keep=("a", "b", "c"),
            drop=("c",),
            rename={"total": "revenue"},
            sources={"url": ("properties.url", "context.page.url"), "who": "traits.email"},
            defaults={"b": 0, "tier": "free"},
            constants={"source": "server"},
        ),
    )
    blueprint = Blueprint(rules={"E": rule})
    explanation = run(
        blueprint,
        "track",
        "E",
        {"a": 1, "c": 3, "d": 4, "total": 9},
        context={"page": {"url": "https://x.example/"}},
        traits={"email": "a@example.com"},
    )
    assert attributes(explanation)["properties"] == {
        "a": 1,
        "revenue": 9,
        "url": "https://x.example/",
        "who": "a@example.com",
        "b": 0,
        "tier": "free",
        "source": "server",
        "consent": {},
    }


def test_value_unique_id_and_time_sources() -> None:
    """value reads the first present path; unique_id and time come from the named paths."""
    rule = Rule(
        metric="purchase",
        value=("properties.revenue", "properties.total"),
        value_currency="properties.currency",
        unique_id="properties.order_id",
        time="properties.ordered_at",
    )
    explanation = run(
        Blueprint(rules={"Order Completed": rule}),
        "track",
        "Order Completed",
        {"total": 12.5, "currency": "EUR", "order_id": 77, "ordered_at": "2024-05-01T10:00:00Z"},
    )
    attrs_ = attributes(explanation)
    assert (attrs_["value"], attrs_["value_currency"]) == (12.5, "EUR")
    assert attrs_["unique_id"] == "77"
    assert attrs_["time"] == "2024-05-01T10:00:00+00:00"


def test_unique_id_and_time_fall_back_to_the_call() -> None:
    """Without the named values, unique_id is the message id and time the call's timestamp."""
    rule = Rule(metric="m", unique_id="properties.order_id", time="properties.at")
    explanation = run(Blueprint(rules={"E": rule}), "track", "E", timestamp="2024-01-02T00:00:00Z")
    assert attributes(explanation)["unique_id"] == "m-1"
    assert attributes(explanation)["time"] == "2024-01-02T00:00:00+00:00"


def test_a_bad_time_value_names_its_path() -> None:
    """A time source that is not a date-time raises, naming the path."""
    rule = Rule(metric="m", time="properties.at")
    with pytest.raises(ValidationError, match=r"properties\.at: 'yesterday' is not an ISO 8601"):
        run(Blueprint(rules={"E": rule}), "track", "E", {"at": "yesterday"})


@pytest.mark.parametrize(
    ("style", "expected"), [("snake_case", "plan_changed"), ("as_is", "Plan Changed")]
)
def test_catch_all_forward(style: Any, expected: str) -> None:
    """A forwarding catch-all sends events without a rule, named in the chosen style."""
    blueprint = attrs.evolve(default_blueprint(), catch_all=CatchAll("forward", style))
    explanation = run(blueprint, "track", "Plan Changed", {"plan": "pro"})
    assert explanation.rule == "catch_all"
    assert metric(explanation) == expected
    assert attributes(explanation)["properties"] == {"plan": "pro", "consent": {}}


def test_disable_wins_over_a_forwarding_catch_all() -> None:
    """A disabled event stays dropped when the catch-all forwards everything else."""
    blueprint = attrs.evolve(default_blueprint(), catch_all=CatchAll("forward")).disable("Ping")
    assert run(blueprint, "track", "Ping").status == "drop"


def test_identify_can_be_disabled() -> None:
    """IdentifyRule(enabled=False) drops identify calls with a reason."""
    blueprint = attrs.evolve(default_blueprint(), identify=IdentifyRule(enabled=False))
    explanation = run(blueprint, "identify", "u-1", {"email": "a@example.com"})
    assert (explanation.status, explanation.rule) == ("drop", "identify")


def test_profile_map_is_part_of_the_blueprint() -> None:
    """A custom profile map feeds attributes and keeps consumed traits out of properties."""
    profile = ProfileMap(
        attributes={"first_name": "traits.given", "locale": "context.locale"},
        location={"city": "traits.town", "latitude": "traits.geo.lat"},
        properties=PropertyMap(drop=("secret",), rename={"plan": "Plan"}),
    )
    blueprint = attrs.evolve(default_blueprint(), profile=profile)
    explanation = run(
        blueprint,
        "identify",
        "u-1",
        {"given": "Ana", "town": "Porto", "geo": {"lat": 41.1}, "plan": "pro", "secret": "s"},
        context={"locale": "pt-PT"},
    )
    assert attributes(explanation) == {
        "external_id": "u-1",
        "first_name": "Ana",
        "locale": "pt-PT",
        "location": {"city": "Porto", "latitude": 41.1},
        "properties": {"Plan": "pro"},
    }


def test_an_address_that_is_not_an_object_is_refused() -> None:
    """A trait the location reads from must be an object, or the call raises naming it."""
    with pytest.raises(ValidationError, match=r"traits\.address: must be an object"):
        run(default_blueprint(), "identify", "u-1", {"address": "1 High St"})


def test_a_string_attribute_must_be_a_string() -> None:
    """A profile attribute fed by a number raises, naming the trait's path."""
    with pytest.raises(ValidationError, match=r"traits\.firstName: must be a string"):
        run(default_blueprint(), "identify", "u-1", {"firstName": 5})


def test_line_items_become_one_event_each() -> None:
    """An ItemRule sends one event per element with unique_id '<parent>:<index>'."""
    rule = Rule(
        metric="Order",
        items=ItemRule(
            path="properties.lines",
            metric="Line",
            properties=PropertyMap(keep=("sku",), sources={"order": "properties.id"}),
            value="item.price",
        ),
    )
    explanation = run(
        Blueprint(rules={"Order": rule}),
        "track",
        "Order",
        {"id": "o-1", "lines": [{"sku": "a", "price": 1}, {"sku": "b", "price": 2, "x": 0}]},
    )
    assert [metric(explanation, i) for i in range(3)] == ["Order", "Line", "Line"]
    assert [attributes(explanation, i)["unique_id"] for i in range(3)] == ["m-1", "m-1:0", "m-1:1"]
    assert attributes(explanation, 2)["properties"] == {"sku": "b", "order": "o-1", "consent": {}}
    assert attributes(explanation, 2)["value"] == 2


def test_line_items_must_be_a_list_of_objects() -> None:
    """A line-item source that is not a list of objects raises, naming the element."""
    rule = Rule(metric="O", items=ItemRule(path="properties.lines", metric="L"))
    with pytest.raises(ValidationError, match=r"properties\.lines\[1\]: must be an object"):
        run(Blueprint(rules={"O": rule}), "track", "O", {"lines": [{}, 3]})


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Rule(metric=""), "metric: expected a non-empty metric name"),
        (lambda: Rule(metric="m", value="revenue"), "value: 'revenue' must start with one of"),
        (lambda: Rule(metric="m", mapper="nope"), "mapper: expected a function"),  # type: ignore[arg-type]
        (lambda: CatchAll("send"), "action: expected one of 'drop', 'forward'"),  # type: ignore[arg-type]
        (lambda: ProfileMap(attributes={"age": "traits.age"}), "'age' is not one of"),
        (lambda: PropertyMap(constants={"x": float("inf")}), r"constants\['x'\]"),
    ],
)
def test_parts_check_themselves(build: Any, message: str) -> None:
    """Building a rule or map in code with a bad value raises ValidationError naming it."""
    with pytest.raises(ValidationError, match=message):
        build()
