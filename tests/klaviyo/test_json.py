"""_klaviyo/json.py: value cleaning, Klaviyo's limits, and exact Decimal output."""

from __future__ import annotations

import enum
import json
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klaviyo_signal._errors import ValidationError
from klaviyo_signal._klaviyo.json import JSON, clean_properties, clean_value, dumps


class Color(enum.Enum):
    RED = "red"
    SHADE = ("dark", 2)


class Size(enum.IntEnum):
    LARGE = 3


class Frozen(Mapping[str, int]):
    """A Mapping that is not a dict."""

    def __getitem__(self, key: str) -> int:
        return {"a": 1}[key]

    def __iter__(self) -> Iterator[str]:
        return iter(["a"])

    def __len__(self) -> int:
        return 1


def nest(levels: int) -> dict[str, Any]:
    """Return an object that is ``levels`` objects deep, counting itself."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"n": value}
    return value


def test_scalars_are_kept() -> None:
    """str, bool, int, float and None pass through unchanged."""
    value = {"s": "x", "t": True, "f": False, "i": -3, "x": 1.5, "n": None}
    assert clean_value(value, "properties") == value


def test_nested_containers_are_copied() -> None:
    """Cleaning returns new dicts and lists, so later caller mutations do not leak in."""
    original: dict[str, Any] = {"items": [{"sku": "a"}]}
    cleaned = clean_value(original, "properties")
    original["items"][0]["sku"] = "b"
    assert cleaned == {"items": [{"sku": "a"}]}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_float_names_the_path(bad: float) -> None:
    """NaN and infinities are rejected with the key path of the value."""
    with pytest.raises(ValidationError, match=r"^properties\.items\[2\]\.price: .*not a finite"):
        clean_value({"items": [{}, {}, {"price": bad}]}, "properties")


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "sNaN"])
def test_non_finite_decimal_is_rejected(bad: str) -> None:
    """Decimal NaN and infinities are rejected with the key path."""
    with pytest.raises(ValidationError, match=r"^properties\.total: Decimal\(.*not a finite"):
        clean_value({"total": Decimal(bad)}, "properties")


def test_decimal_is_kept() -> None:
    """A finite Decimal stays a Decimal until the bytes are written."""
    cleaned = clean_value({"total": Decimal("19.99")}, "properties")
    assert cleaned == {"total": Decimal("19.99")}
    assert isinstance(cleaned["total"], Decimal)  # type: ignore[index]


def test_naive_datetime_is_utc() -> None:
    """A naive datetime is taken as UTC and written with +00:00."""
    assert clean_value(datetime(2024, 10, 15, 9, 30), "p") == "2024-10-15T09:30:00+00:00"


def test_aware_datetime_keeps_its_offset() -> None:
    """An aware datetime is written with its own offset, not moved to UTC."""
    tz = timezone(timedelta(hours=2))
    assert clean_value(datetime(2024, 1, 1, 12, tzinfo=tz), "p") == "2024-01-01T12:00:00+02:00"


def test_date_uuid_and_enum_convert() -> None:
    """date, UUID and Enum become their ISO date, str and cleaned value."""
    uid = UUID("12345678-1234-5678-1234-567812345678")
    cleaned = clean_value(
        {"d": date(2024, 2, 29), "u": uid, "c": Color.RED, "s": Color.SHADE, "z": Size.LARGE},
        "p",
    )
    assert cleaned == {
        "d": "2024-02-29",
        "u": "12345678-1234-5678-1234-567812345678",
        "c": "red",
        "s": ["dark", 2],
        "z": 3,
    }
    assert type(cleaned["z"]) is int  # type: ignore[index]


def test_tuple_and_sets_become_lists() -> None:
    """Tuples keep order; sets are sorted when their items sort, else kept in iteration order."""
    cleaned = clean_value({"t": (3, 1), "s": {3, 1, 2}, "f": frozenset({"b", "a"})}, "p")
    assert cleaned == {"t": [3, 1], "s": [1, 2, 3], "f": ["a", "b"]}
    mixed = clean_value({1, "a"}, "p")
    assert isinstance(mixed, list)
    assert sorted(mixed, key=str) == [1, "a"]


def test_non_dict_mapping_becomes_dict() -> None:
    """Any Mapping with str keys becomes a plain dict."""
    assert clean_value(
        {"m": Frozen(), "p": MappingProxyType({"x": 1}), "o": OrderedDict(y=2)}, "p"
    ) == {"m": {"a": 1}, "p": {"x": 1}, "o": {"y": 2}}


def test_non_str_key_is_rejected() -> None:
    """A mapping key that is not a str fails, naming the mapping and the key."""
    with pytest.raises(
        ValidationError, match=r"^properties\.meta: key 1 is of type int; keys must"
    ):
        clean_value({"meta": {1: "x"}}, "properties")


def test_odd_keys_are_quoted_in_paths() -> None:
    """Keys that are not identifiers appear as ['key'] in the path."""
    with pytest.raises(ValidationError, match=r"^properties\['Order Total'\]: "):
        clean_value({"Order Total": float("nan")}, "properties")


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(b"raw", "bytes"), (object(), "object"), (iter([1]), "list_iterator"), (1j, "complex")],
)
def test_unsupported_type_names_path_and_type(value: object, type_name: str) -> None:
    """Types with no JSON form, bytes included, fail with the path, the type and what to do."""
    with pytest.raises(ValidationError) as info:
        clean_value({"x": [value]}, "properties")
    assert str(info.value) == (
        f"properties.x[0]: a value of type {type_name} cannot be sent as JSON; "
        "convert it to str, number, bool, list or dict first"
    )


def test_string_limit_is_utf8_bytes() -> None:
    """A string may be 100,000 UTF-8 bytes, not one more, counted in bytes not characters."""
    assert clean_value("a" * 100_000, "p") == "a" * 100_000
    assert clean_value("é" * 50_000, "p") == "é" * 50_000
    with pytest.raises(ValidationError, match=r"^properties\.body: .*100001 bytes.*100000 bytes"):
        clean_value({"body": "a" * 100_001}, "properties")
    with pytest.raises(ValidationError, match=r"^p: the string is 100002 bytes"):
        clean_value("é" * 50_001, "p")


def test_lone_surrogate_is_rejected() -> None:
    """A str that cannot be encoded as UTF-8 fails at call time, not when sending."""
    with pytest.raises(ValidationError, match=r"^p\.s: .*lone surrogate"):
        clean_value({"s": "a\ud800"}, "p")
    with pytest.raises(ValidationError, match=r"^p: key .*lone surrogate"):
        clean_value({"\udc00": 1}, "p")


def test_array_limit() -> None:
    """An array may hold 4000 items; 4001 fail with the path and the limit."""
    assert len(clean_value([0] * 4000, "p")) == 4000  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"^properties\.ids: the array has 4001 items.*4000"):
        clean_properties({"ids": (0,) * 4001}, "properties")


def test_depth_counts_the_properties_object_as_level_one() -> None:
    """Properties may nest 10 objects deep (itself included); the 11th level fails."""
    assert clean_properties(nest(10), "properties") == nest(10)
    with pytest.raises(ValidationError, match=r"^properties(\.n){10}: nested 11 levels deep.*10"):
        clean_properties(nest(11), "properties")


def test_depth_counts_arrays_too() -> None:
    """Arrays count as levels just as objects do."""
    value: Any = 1
    for _ in range(9):
        value = [value]
    assert clean_properties({"a": value}, "properties") == {"a": value}
    with pytest.raises(ValidationError, match=r"nested 11 levels deep"):
        clean_properties({"a": [value]}, "properties")


def test_huge_int_is_rejected() -> None:
    """An int too long for Python to write as JSON fails at call time."""
    with pytest.raises(ValidationError, match=r"^p: the integer has more than 4000 digits"):
        clean_value(10**4001, "p")


def test_properties_key_limit() -> None:
    """300 event properties are accepted and 301 are rejected, naming the limit."""
    ok = {f"k{i}": i for i in range(300)}
    assert clean_properties(ok, "properties", max_keys=300) == ok
    with pytest.raises(ValidationError) as info:
        clean_properties({**ok, "one_more": 1}, "properties", max_keys=300)
    assert str(info.value).startswith("properties: 301 keys is over the limit of 300")
    assert "over 300 event properties" in str(info.value)


def test_properties_without_limit_and_none() -> None:
    """Without max_keys any count is fine, and None gives an empty dict."""
    many = {f"k{i}": i for i in range(1000)}
    assert clean_properties(many, "traits") == many
    assert clean_properties(None, "traits") == {}


def test_properties_must_be_a_mapping() -> None:
    """A list given as properties fails, naming the path and the type."""
    with pytest.raises(ValidationError, match=r"^properties: must be a mapping .* type list"):
        clean_properties([("a", 1)], "properties")  # type: ignore[arg-type]


def test_dumps_is_compact_utf8() -> None:
    """dumps writes compact JSON as UTF-8, without escaping non-ASCII characters."""
    assert dumps({"a": [1, None, True], "b": "Zoë"}) == '{"a":[1,null,true],"b":"Zoë"}'.encode()


@pytest.mark.parametrize(
    ("decimal", "text"),
    [
        ("19.99", b"19.99"),
        ("1E+2", b"1E+2"),
        ("0.1000000000000000000000000001", b"0.1000000000000000000000000001"),
        ("-0", b"-0"),
        ("1.0E-7", b"1.0E-7"),
        ("123456789012345678901234567890.12", b"123456789012345678901234567890.12"),
    ],
)
def test_dumps_writes_decimals_exactly(decimal: str, text: bytes) -> None:
    """A Decimal is written as str(decimal), a valid JSON number, with no float rounding."""
    body = dumps({"price": Decimal(decimal), "items": [{"p": Decimal(decimal)}]})
    assert body == b'{"price":' + text + b',"items":[{"p":' + text + b"}]}"
    assert json.loads(body, parse_float=Decimal, parse_int=Decimal)["price"] == Decimal(decimal)


def test_dumps_leaves_lookalike_strings_alone() -> None:
    """A caller string that looks like a number or a marker is written as a string."""
    value: JSON = {"a": "19.99", "b": "klaviyo-signal-decimal-0:1", "c": Decimal("1")}
    assert json.loads(dumps(value)) == {"a": "19.99", "b": "klaviyo-signal-decimal-0:1", "c": 1}


def test_dumps_refuses_uncleaned_values() -> None:
    """dumps is for cleaned values: other types raise TypeError instead of being guessed."""
    with pytest.raises(TypeError, match="clean it first"):
        dumps({"u": UUID(int=1)})  # type: ignore[dict-item]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=30,
)


@given(st.dictionaries(st.text(), json_values, max_size=10))
def test_json_properties_round_trip(properties: dict[str, Any]) -> None:
    """Any JSON-able properties survive clean_properties, dumps and json.loads unchanged."""
    assert json.loads(dumps(clean_properties(properties, "properties"))) == properties


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_any_finite_decimal_round_trips_exactly(value: Decimal) -> None:
    """Every finite Decimal is written as valid JSON that parses back to the same digits."""
    body = dumps(clean_value({"v": value}, "p"))
    back = json.loads(body, parse_float=Decimal, parse_int=Decimal)["v"]
    assert str(back) == str(value)


def test_str_subclass_keys_and_values_become_plain_str() -> None:
    """Subclasses of str, int and float become the plain built-in types."""

    class Tag(str):
        pass

    class Count(int):
        pass

    cleaned = clean_value({Tag("k"): [Tag("v"), Count(2), 10**4001 // 10**4000]}, "p")
    assert cleaned == {"k": ["v", 2, 10]}
    assert type(next(iter(cleaned))) is str  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"^p\.big: the integer has more than 4000 digits"):
        clean_value({"big": -(10**4001)}, "p")
