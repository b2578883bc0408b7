"""Blueprint files: loading JSON and TOML, reporting every problem, and round-tripping."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klaviyo_signal import (
    Blueprint,
    BlueprintError,
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
from klaviyo_signal._klaviyo.json import JSON


def tag_plan(message: Message) -> Mapping[str, JSON] | None:
    """A module-level mapper a file can name as 'tests.test_blueprint_file:tag_plan'."""
    return {"plan": message.properties.get("plan")}


MAPPER_REF = f"{__name__}:tag_plan"

# -- generated blueprints ------------------------------------------------------------------

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)
metrics = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Z", "C")), min_size=1, max_size=20
)
segments = st.text("abcxyz_AZ09 -", min_size=1, max_size=6).filter(lambda s: "." not in s)
roots = st.sampled_from(["properties", "context", "traits", "event", "message_id", "timestamp"])
paths = st.builds(lambda root, rest: ".".join([root, *rest]), roots, st.lists(segments, max_size=3))
path_tuples = st.lists(paths, min_size=1, max_size=3).map(tuple)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=5,
)
property_maps = st.builds(
    PropertyMap,
    keep=st.just("all") | st.lists(names, max_size=3).map(tuple),
    drop=st.lists(names, max_size=3).map(tuple),
    rename=st.dictionaries(names, names, max_size=3),
    sources=st.dictionaries(names, path_tuples, max_size=3),
    defaults=st.dictionaries(names, json_values, max_size=2),
    constants=st.dictionaries(names, json_values, max_size=2),
)
item_rules = st.builds(
    ItemRule,
    path=paths,
    metric=metrics,
    properties=property_maps,
    value=st.lists(
        paths.map(lambda p: "item." + p.partition(".")[2] if "." in p else p), max_size=2
    ).map(tuple),
    value_currency=st.lists(paths, max_size=2).map(tuple),
)
rules = st.builds(
    Rule,
    metric=metrics,
    enabled=st.booleans(),
    properties=property_maps,
    value=st.lists(paths, max_size=2).map(tuple),
    value_currency=st.lists(paths, max_size=2).map(tuple),
    unique_id=paths,
    time=paths,
    mapper=st.none() | st.just(tag_plan),
    items=st.none() | item_rules,
)
attribute_names = st.sampled_from(["first_name", "last_name", "organization", "title", "image"])
location_names = st.sampled_from(["address1", "city", "region", "zip", "latitude"])
blueprints = st.builds(
    Blueprint,
    rules=st.dictionaries(names, rules, max_size=3),
    page=rules,
    identify=st.builds(IdentifyRule, st.booleans()),
    catch_all=st.builds(
        CatchAll, st.sampled_from(["drop", "forward"]), st.sampled_from(["snake_case", "as_is"])
    ),
    profile=st.builds(
        ProfileMap,
        attributes=st.dictionaries(attribute_names, path_tuples, max_size=3),
        location=st.dictionaries(location_names, path_tuples, max_size=3),
        properties=property_maps,
    ),
    mapper=st.none() | st.just(tag_plan),
)


@given(blueprints)
def test_to_dict_round_trips(blueprint: Blueprint) -> None:
    """from_dict(to_dict(b)) == b for any blueprint, and to_dict is plain JSON."""
    data = blueprint.to_dict()
    assert Blueprint.from_dict(json.loads(json.dumps(data))) == blueprint


@pytest.mark.parametrize("variant", ["default", "klaviyo_ecommerce"])
def test_built_in_variants_round_trip(variant: str) -> None:
    """Both built-in variants survive to_dict and from_dict unchanged."""
    blueprint = default_blueprint(variant)
    assert Blueprint.from_dict(blueprint.to_dict()) == blueprint


def test_code_defaults_match_the_default_file() -> None:
    """Blueprint()'s profile map is the default file's, so code and file agree."""
    assert ProfileMap() == default_blueprint().profile


# -- files ---------------------------------------------------------------------------------


def test_from_file_reads_json(tmp_path: Path) -> None:
    """A .json file loads into the same blueprint as its dict."""
    data = {"rules": {"Signed Up": {"metric": "signed_up", "mapper": MAPPER_REF}}}
    file = tmp_path / "blueprint.json"
    file.write_text(json.dumps(data))
    blueprint = Blueprint.from_file(file)
    assert blueprint.rules["Signed Up"].mapper is tag_plan
    assert blueprint == Blueprint.from_dict(data)


def test_from_file_reads_toml(tmp_path: Path) -> None:
    """A .toml file with quoted event names loads like JSON."""
    file = tmp_path / "blueprint.toml"
    file.write_text(
        """
version = 1
[catch_all]
action = "forward"
metric_style = "as_is"

[rules."Order Completed"]
metric = "Placed Order"
value = ["properties.revenue", "properties.total"]
value_currency = "properties.currency"

[rules."Order Completed".properties]
keep = "all"
rename = { order_id = "OrderId" }
"""
    )
    blueprint = Blueprint.from_file(str(file))
    rule = blueprint.rules["Order Completed"]
    assert rule.value == ("properties.revenue", "properties.total")
    assert rule.properties.rename == {"order_id": "OrderId"}
    assert blueprint.catch_all == CatchAll("forward", "as_is")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("b.yaml", "x", "expected a .json or .toml file, got '.yaml'"),
        ("b.json", "{\n  'x': 1}", "not valid JSON: Expecting property name .* at line 2"),
        ("b.toml", "rules = [", "not valid TOML"),
        ("b.json", "[]", r"\(top level\): expected a table"),
    ],
)
def test_unreadable_files_say_why(tmp_path: Path, name: str, text: str, message: str) -> None:
    """A file with the wrong suffix or broken syntax raises BlueprintError naming the file."""
    file = tmp_path / name
    file.write_text(text)
    with pytest.raises(BlueprintError, match=message) as info:
        Blueprint.from_file(file)
    assert str(file) in str(info.value)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    """A file that does not exist raises BlueprintError, not a bare OSError."""
    with pytest.raises(BlueprintError, match="cannot read the file"):
        Blueprint.from_file(tmp_path / "none.json")


def test_every_problem_is_reported_with_its_path() -> None:
    """A malformed blueprint lists every problem at once, each with its path."""
    data: Any = {
        "version": 2,
        "colour": "blue",
        "rules": {
            "Order Completed": {
                "metric": "",
                "value": 12,
                "value_currency": ["properties.currency", "currency"],
                "enabled": "yes",
                "propertes": {},
                "properties": {"keep": "some", "rename": {"a": 1}, "defaults": {"n": float("nan")}},
                "mapper": "no_such_module_xyz:f",
                "items": {"metric": "Line", "extra": True},
            }
        },
        "page": {"time": "when"},
        "identify": {"enabled": 1},
        "catch_all": {"action": "send", "metric_style": "CamelCase"},
        "profile": {"attributes": {"age": "traits.age", "title": 3}, "location": []},
    }
    with pytest.raises(BlueprintError) as info:
        Blueprint.from_dict(data, source="shop.json")
    problems = info.value.problems
    expected = [
        "version: this library reads version 1, got 2",
        "colour: unknown key",
        'rules["Order Completed"].propertes: unknown key',
        'rules["Order Completed"].metric: expected a non-empty metric name',
        'rules["Order Completed"].value: expected a dotted path, got 12',
        "rules[\"Order Completed\"].value_currency[1]: 'currency' must start with one of",
        "rules[\"Order Completed\"].enabled: expected true or false, got 'yes'",
        "rules[\"Order Completed\"].properties.keep: expected a list of property names, got 'some'",
        'rules["Order Completed"].properties.rename["a"]: expected the new property name, got 1',
        'rules["Order Completed"].properties.defaults["n"]: nan is not a finite number',
        "rules[\"Order Completed\"].mapper: cannot load mapper 'no_such_module_xyz:f'",
        'rules["Order Completed"].items.extra: unknown key',
        "rules[\"Order Completed\"].items: missing key 'path'",
        "page.time: 'when' must start with one of",
        "identify.enabled: expected true or false, got 1",
        "catch_all.action: expected 'drop' or 'forward', got 'send'",
        "catch_all.metric_style: expected 'snake_case' or 'as_is', got 'CamelCase'",
        'profile.attributes["age"]: unknown key',
        'profile.attributes["title"]: expected a dotted path, got 3',
        "profile.location: expected a table of names, got []",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in problems), (start, problems)
    assert len(problems) == len(expected), problems
    text = str(info.value)
    assert text.startswith(f"shop.json: {len(expected)} problems:")
    assert isinstance(info.value, ValidationError)


def test_a_disabled_rule_needs_no_metric() -> None:
    """A rule without a metric takes the snake_case of its event name."""
    blueprint = Blueprint.from_dict({"rules": {"Signed Up": {"enabled": False}}})
    assert blueprint.rules["Signed Up"] == Rule(metric="signed_up", enabled=False)


def test_a_mapper_must_be_a_function() -> None:
    """A 'module:name' that names something other than a function is a load-time problem."""
    with pytest.raises(BlueprintError, match=r"mapper: 'json:__name__' is not a function"):
        Blueprint.from_dict({"mapper": "json:__name__"})


def test_to_dict_refuses_a_lambda_mapper() -> None:
    """to_dict explains that a lambda mapper cannot be named in a file."""
    blueprint = default_blueprint().enable("X", mapper=lambda message: {})
    with pytest.raises(ValidationError, match=r'rules\["X"\]\.mapper: .*module\'s top level'):
        blueprint.to_dict()


def test_file_that_is_not_utf8_is_a_blueprint_error(tmp_path: Path) -> None:
    """A file in another encoding is reported as a problem, not a UnicodeDecodeError."""
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{}")
    with pytest.raises(BlueprintError, match="not UTF-8 text"):
        Blueprint.from_file(bad)
