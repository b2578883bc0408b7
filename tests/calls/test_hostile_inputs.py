"""Hostile input at every public call: a ValidationError at the call, or a clean outcome.

Each call either raises ``ValidationError`` on the caller's line, or ends ``delivered`` (the
FakeKlaviyo checks every body against Klaviyo's schemas and answers 400 otherwise) or
``dropped`` with a reason; never another exception, never ``failed`` on the worker thread.
Both modes, both the caller's fast lane and the full route.
"""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from klaviyo_signal import (
    Blueprint,
    CatchAll,
    Client,
    Delivery,
    DeliveryStatus,
    PropertyMap,
    Rule,
    SubscribeRule,
    ValidationError,
    default_blueprint,
)
from klaviyo_signal.testing import FakeKlaviyo
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY

_LANE_KEYS = ("a", "b", "c")
BLUEPRINT = Blueprint(
    rules={"Lane": Rule(metric="lane", properties=PropertyMap(keep=_LANE_KEYS))},
    catch_all=CatchAll(action="forward", metric_style="as_is"),
)
MODES = ("sync", "background")


@pytest.fixture(scope="module")
def server() -> Iterator[FakeKlaviyo]:
    """One FakeKlaviyo for the whole module."""
    with FakeKlaviyo() as fake:
        yield fake


@pytest.fixture(scope="module")
def clients(server: FakeKlaviyo) -> Iterator[dict[str, Client]]:
    """A sync and a background client of the forwarding blueprint, kept for the module."""
    made = {
        mode: Client(
            PUBLIC_KEY,
            PRIVATE_KEY,
            base_url=server.url,
            sync_mode=mode == "sync",
            blueprint=BLUEPRINT,
            rate_limits=None,
        )
        for mode in MODES
    }
    yield made
    for client in made.values():
        client.close()


def settle(client: Client, call: Callable[[], Delivery]) -> Delivery | None:
    """Make one call; None if it raised ValidationError, else its final Delivery.

    Any other exception propagates and fails the test; so does a failed outcome.
    """
    try:
        delivery = call()
    except ValidationError as exc:
        event(f"refused: {str(exc).partition(':')[0]}")
        return None
    if delivery.status is DeliveryStatus.QUEUED:
        assert client.flush(timeout=30)
        delivery = delivery.wait(timeout=30)
    assert delivery.status in (DeliveryStatus.DELIVERED, DeliveryStatus.DROPPED), delivery
    if delivery.status is DeliveryStatus.DROPPED:
        assert delivery.reason
    event(str(delivery.status))
    return delivery


# -- hostile values ----------------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"
    NAN = math.nan


class Frozen(Mapping[Any, Any]):
    """A Mapping that is not a dict."""

    def __init__(self, data: dict[Any, Any]) -> None:
        self._data = data

    def __getitem__(self, key: Any) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


class Text(str):
    """A str subclass."""


_ODD_TEXT = [
    "\ud800",
    "a\udfffb",
    "\x00",
    "",
    " ",
    "\n",
    "é",
    "😀",
    "\u2028",
    '"\\',
    "x" * 127,
    "x" * 128,
    "consent",
    Text("plain"),
    Text("\ud800"),
]
text = st.one_of(
    st.sampled_from(_ODD_TEXT),
    st.text(st.characters(exclude_categories=()), max_size=12),  # surrogates included
)
_OFFSETS = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
moments = st.one_of(
    st.sampled_from([datetime.min, datetime.max]),
    st.datetimes(timezones=st.none() | _OFFSETS),
    st.datetimes(min_value=datetime(9999, 12, 31), timezones=_OFFSETS),
    st.datetimes(max_value=datetime(1, 1, 2), timezones=_OFFSETS),
    st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=_OFFSETS
    ),
)
scalars = st.one_of(
    text,
    st.sampled_from(
        [
            None,
            True,
            False,
            0,
            -1,
            10**400,
            -(10**400),
            10**4001,
            math.nan,
            math.inf,
            -math.inf,
            -0.0,
            1e308,
            5e-324,
            Decimal("NaN"),
            Decimal("sNaN"),
            Decimal("Infinity"),
            Decimal("-0"),
            Decimal("19.99"),
            Decimal("1E+999999"),
            Decimal("1" * 4001),
            date.min,
            uuid.UUID(int=7),
            Colour.RED,
            Colour.NAN,
            b"bytes",
            bytearray(b"x"),
            complex(1, 2),
            object(),
            {1, "a"},
            frozenset({"b", "a"}),
            (),
        ]
    ),
    st.integers(),
    st.floats(),
    st.decimals(),
    moments,
)
keys = st.one_of(text, st.sampled_from([1, None, 1.5, True, (1, 2), b"k"]))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(keys, inner, max_size=3),
        st.dictionaries(keys, inner, max_size=3).map(Frozen),
    ),
    max_leaves=12,
)


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels):
        value = {"n": value}
    return value


_NOT_MAPPINGS = [[1], "x", 5, True, b"x", ("a",), 1.5, {"a", "b"}]
mappings = st.one_of(
    st.none(),
    st.sampled_from([*_NOT_MAPPINGS, deep(9), deep(12), MappingProxyType({"a": 1})]),
    st.dictionaries(keys, values, max_size=4),
    st.dictionaries(keys, values, max_size=4).map(Frozen),
)
ids = st.one_of(
    st.just("user-1"),
    text,
    st.sampled_from([None, 0, -5, 10**400, True, 1.5, uuid.UUID(int=3), b"id", ["u"]]),
)
timestamps = st.one_of(
    st.none(), moments, moments.map(lambda m: m.isoformat()), text, st.sampled_from([0, 1.5])
)
message_ids = st.one_of(
    st.none(), text, st.just("m" * 256), st.sampled_from([uuid.UUID(int=9), 5, b"m"])
)
consents = st.one_of(
    st.none(),
    st.sampled_from(
        [{"marketing": True}, {"marketing": False}, {"Marketing": True, "marketing": False}]
    ),
    st.dictionaries(keys, st.one_of(st.booleans(), scalars), max_size=3),
    st.sampled_from(_NOT_MAPPINGS),
)
traits = st.one_of(
    mappings,
    st.fixed_dictionaries({"email": st.one_of(st.just("a@example.com"), text)}),
    st.fixed_dictionaries({"phone": st.one_of(st.just("+14155550100"), text)}),
)
emails = st.one_of(st.none(), st.just("a@example.com"), text, st.sampled_from([5, b"a@b.co"]))
phones = st.one_of(st.none(), st.just("+14155550100"), text, st.sampled_from([14155550100]))
channel_lists = st.one_of(
    st.none(),
    st.sampled_from(
        [False, True, 5, "email", b"email", {"email": False}, [], ["email"], ["sms"], [["email"]]]
    ),
    st.lists(st.one_of(st.sampled_from(["email", "sms", "sms_transactional"]), text), max_size=3),
    st.frozensets(st.sampled_from(["email", "sms"])),
)
_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# Sendable values, so that a call with one hostile argument often gets through to Klaviyo.
_fine_text = st.text(max_size=12)
fine_values = st.recursive(
    st.one_of(
        _fine_text,
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.decimals(allow_nan=False, allow_infinity=False, places=2),
        st.booleans(),
        st.none(),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_fine_text, inner, max_size=3),
    max_leaves=8,
)
fine_mappings = st.dictionaries(_fine_text, fine_values, max_size=4)
hostile_values = st.one_of(fine_values, values)
hostile_mappings = st.one_of(
    mappings, st.dictionaries(_fine_text, hostile_values, min_size=1, max_size=3)
)


def calls(fine: dict[str, Any], hostile: dict[str, st.SearchStrategy[Any]]) -> Any:
    """Arguments of a sendable call with one or two of them replaced by hostile values."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        kwargs = {
            name: draw(value) if isinstance(value, st.SearchStrategy) else value
            for name, value in fine.items()
        }
        for name in draw(st.lists(st.sampled_from(sorted(hostile)), min_size=1, max_size=2)):
            kwargs[name] = draw(hostile[name])
        return kwargs

    return build()


_CALL = {
    "user_id": "user-1",
    "properties": fine_mappings,
    "traits": st.none() | st.just({"email": "a@example.com", "plan": "pro"}),
    "context": st.none() | st.just({"ip": "127.0.0.1", "page": {"url": "https://x.test/"}}),
    "consent": st.none() | st.just({"marketing": True}),
    "timestamp": st.none() | st.just("2024-10-15T09:30:00Z"),
    "message_id": st.none(),
}
_HOSTILE = {
    "user_id": ids,
    "anonymous_id": ids,
    "properties": hostile_mappings,
    "traits": st.one_of(traits, hostile_mappings),
    "context": hostile_mappings,
    "consent": consents,
    "timestamp": timestamps,
    "message_id": message_ids,
}


# -- the calls ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@_SETTINGS
@given(
    kwargs=calls(
        {**_CALL, "event": st.sampled_from(["Custom", "Signed Up", "Order Completed"])},
        {**_HOSTILE, "event": st.one_of(text, st.sampled_from([None, 5, b"E"]))},
    )
)
def test_track_full_route(clients: dict[str, Client], mode: str, kwargs: dict[str, Any]) -> None:
    """track() with hostile values anywhere raises ValidationError or ends cleanly."""
    client = clients[mode]
    event, properties = kwargs.pop("event"), kwargs.pop("properties")
    settle(client, lambda: client.track(event, properties, **kwargs))


_LANE = {
    "properties": st.fixed_dictionaries(
        {}, optional=dict.fromkeys((*_LANE_KEYS, "other"), fine_values)
    ),
    "user_id": "user-1",
    "traits": st.none() | st.just({"email": "a@example.com"}),
}


@pytest.mark.parametrize("mode", MODES)
@_SETTINGS
@given(
    kwargs=calls(
        _LANE,
        {
            "properties": st.fixed_dictionaries(
                {}, optional=dict.fromkeys((*_LANE_KEYS, "other"), hostile_values)
            ),
            "user_id": ids,
            "traits": st.fixed_dictionaries({"email": text}) | traits,
        },
    )
)
def test_track_fast_lane(clients: dict[str, Client], mode: str, kwargs: dict[str, Any]) -> None:
    """A fast-lane shaped track() with hostile values raises ValidationError or ends cleanly."""
    client = clients[mode]
    properties = kwargs.pop("properties")
    settle(client, lambda: client.track("Lane", properties, **kwargs))


@pytest.mark.parametrize("mode", MODES)
@_SETTINGS
@given(
    kwargs=calls(
        {**_CALL, "name": st.sampled_from([None, "Home"])},
        {**_HOSTILE, "name": st.one_of(text, st.sampled_from([5, b"p"]))},
    )
)
def test_page(clients: dict[str, Client], mode: str, kwargs: dict[str, Any]) -> None:
    """page() with hostile values anywhere raises ValidationError or ends cleanly."""
    client = clients[mode]
    name, properties = kwargs.pop("name"), kwargs.pop("properties")
    settle(client, lambda: client.page(name, properties, **kwargs))


@pytest.mark.parametrize("mode", MODES)
@_SETTINGS
@given(
    kwargs=calls(
        {**_CALL, "properties": None, "traits": fine_mappings},
        {k: v for k, v in _HOSTILE.items() if k != "properties"},
    )
)
def test_identify(clients: dict[str, Client], mode: str, kwargs: dict[str, Any]) -> None:
    """identify() with hostile values anywhere raises ValidationError or ends cleanly."""
    client = clients[mode]
    user_id, traits_ = kwargs.pop("user_id"), kwargs.pop("traits")
    del kwargs["properties"]
    settle(client, lambda: client.identify(user_id, traits_, **kwargs))


_SUBSCRIBE = {
    "email": st.sampled_from(["a@example.com", None]),
    "phone": st.sampled_from(["+14155550100", None]),
    "list_id": st.sampled_from([None, "L1"]),
    "channels": st.none(),
    "message_id": st.none(),
}
_SUBSCRIBE_HOSTILE = {
    "email": emails,
    "phone": phones,
    "list_id": st.one_of(text, st.just(5)),
    "channels": channel_lists,
    "message_id": message_ids,
}


@pytest.mark.parametrize("mode", MODES)
@_SETTINGS
@given(
    kwargs=calls(
        {
            **_SUBSCRIBE,
            "custom_source": st.sampled_from([None, "footer"]),
            "consented_at": st.sampled_from([None, "2024-10-15T09:30:00Z"]),
            "consent": st.sampled_from([None, {"marketing": True}]),
        },
        {
            **_SUBSCRIBE_HOSTILE,
            "custom_source": st.one_of(text, st.just(5)),
            "consented_at": st.one_of(moments, moments.map(lambda m: m.isoformat()), text),
            "consent": consents,
        },
    )
)
def test_subscribe(clients: dict[str, Client], mode: str, kwargs: dict[str, Any]) -> None:
    """subscribe() with hostile values anywhere raises ValidationError or ends cleanly."""
    client = clients[mode]
    settle(client, lambda: client.subscribe(**kwargs))


@pytest.mark.parametrize("mode", MODES)
@_SETTINGS
@given(kwargs=calls(_SUBSCRIBE, _SUBSCRIBE_HOSTILE))
def test_unsubscribe(clients: dict[str, Client], mode: str, kwargs: dict[str, Any]) -> None:
    """unsubscribe() with hostile values anywhere raises ValidationError or ends cleanly."""
    client = clients[mode]
    settle(client, lambda: client.unsubscribe(**kwargs))


# -- regressions: each defect of issue 13, and each example the generated tests shrank to ----


@pytest.fixture(params=MODES)
def client(request: pytest.FixtureRequest, clients: dict[str, Client]) -> Client:
    """The module's client of one mode."""
    return clients[request.param]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda c: c.track("\ud800", {}, user_id="user-1"), r"^event: the string contains a lone"),
        (lambda c: c.track("Lane", {}, user_id="user-1", traits={"\ud800": 1}), r"^traits: key"),
        (lambda c: c.page("a\udfffb", {}, user_id="u"), r"^name: the string contains a lone"),
        (lambda c: c.track("Custom", {"\ud800": 1}, user_id="u"), r"^properties: key '\\ud800'"),
        (lambda c: c.track("Custom", {"a": {"b\udc00": 1}}, user_id="u"), r"^properties\.a: key"),
        (lambda c: c.identify("u", {"\ud800": 1}), r"^traits: key '\\ud800' contains a lone"),
        (lambda c: c.track("Custom", {}, user_id="u", consent={"\ud800": True}), r"^consent: key"),
        (
            lambda c: c.page(
                None, user_id="u", context={"consent": {"categoryPreferences": {"\udfff": True}}}
            ),
            r"^context\.consent\.categoryPreferences: key",
        ),
    ],
)
def test_lone_surrogates_in_names_and_keys_raise_at_the_call(
    client: Client, call: Callable[[Client], Delivery], match: str
) -> None:
    """A lone surrogate in a name or any key raises ValidationError at the call, both modes."""
    with pytest.raises(ValidationError, match=match):
        call(client)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Rule(metric="m\ud800"), r"^metric: the string contains a lone surrogate"),
        (lambda: PropertyMap(rename={"a": "b\ud800"}), r"^rename\['b\\ud800'\]: the string"),
        (lambda: PropertyMap(constants={"\ud800": 1}), r"^constants\['\\ud800'\]: the string"),
        (lambda: PropertyMap(defaults={"k": "v\ud800"}), r"^defaults\['k'\]: the string"),
        (lambda: PropertyMap(keep=("\ud800",)), r"^keep\['\\ud800'\]"),
        (lambda: SubscribeRule(trait="t", list_id="L\ud800"), r"^list_id: the string"),
        (lambda: SubscribeRule(trait="t", custom_source="\udfff"), r"^custom_source: the string"),
    ],
)
def test_blueprint_strings_with_lone_surrogates_are_refused(
    build: Callable[[], object], match: str
) -> None:
    """A blueprint built in code cannot hold a string that could never be sent."""
    with pytest.raises(ValidationError, match=match):
        build()


_MINUS_TEN = timezone(timedelta(hours=-10))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"consented_at": datetime(9999, 12, 31, 23, 59, tzinfo=_MINUS_TEN)}, "^consented_at: "),
        (
            {"consented_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=10)))},
            "^consented_at",
        ),
        ({"consented_at": "9999-12-31T23:59:00-10:00"}, "^consented_at: "),
        ({"channels": False}, "^channels: must be a list of channel names"),
        ({"channels": 5}, "^channels: must be a list of channel names"),
        ({"channels": {"email": False}}, "^channels: must be a list of channel names"),
        ({"channels": b"email"}, "^channels: pass an iterable of channel names"),
    ],
)
def test_subscribe_bad_dates_and_channels_raise_validation_error(
    client: Client, kwargs: dict[str, Any], match: str
) -> None:
    """Extreme consented_at values and non-list channels raise ValidationError naming them."""
    with pytest.raises(ValidationError, match=match):
        client.subscribe(email="a@b.co", **kwargs)
    if "channels" in kwargs:
        with pytest.raises(ValidationError, match=match):
            client.unsubscribe(email="a@b.co", **kwargs)


@pytest.mark.parametrize(
    "when",
    [
        datetime(9999, 12, 31, 23, 59, tzinfo=_MINUS_TEN),
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=10))),
        datetime.max,
        datetime.min,
        "0001-01-01T00:00:00+10:00",
    ],
)
def test_extreme_timestamps_raise_validation_error(client: Client, when: object) -> None:
    """timestamp= at the ends of the calendar raises ValidationError on every call."""
    for call in (
        lambda: client.track("Lane", {}, user_id="u", timestamp=when),
        lambda: client.page(None, user_id="u", timestamp=when),
        lambda: client.identify("u", timestamp=when),
    ):
        with pytest.raises(ValidationError, match=r"^timestamp: "):
            call()


def test_a_huge_decimal_is_refused_like_a_huge_int(client: Client) -> None:
    """A Decimal of over 4000 digits raises ValidationError, as a 4000-digit int does."""
    with pytest.raises(ValidationError, match=r"^properties\.a: the Decimal has more than 4000"):
        client.track("Lane", {"a": Decimal("1" * 4001)}, user_id="u")


_BIG = "x" * 99_000
_LANE_BIG = Blueprint(
    rules={
        "Wide": Rule(metric="wide", properties=PropertyMap(keep=tuple(f"p{i}" for i in range(299))))
    }
)


@pytest.mark.parametrize(
    ("blueprint", "call"),
    [
        # The full route: strings too long for the fast lane.
        (BLUEPRINT, lambda c: c.track("Custom", {f"p{i}": _BIG for i in range(60)}, user_id="u")),
        # The fast lane: 250 short ASCII strings.
        (
            _LANE_BIG,
            lambda c: c.track("Wide", {f"p{i}": "y" * 24_000 for i in range(250)}, user_id="u"),
        ),
        # Small by the estimate, large as JSON: every NUL is written as \u0000.
        (
            _LANE_BIG,
            lambda c: c.track("Wide", {f"p{i}": "\x00" * 4_000 for i in range(250)}, user_id="u"),
        ),
        (BLUEPRINT, lambda c: c.page("Home", {f"p{i}": _BIG for i in range(60)}, user_id="u")),
        (BLUEPRINT, lambda c: c.identify("u", {f"t{i}": _BIG for i in range(60)})),
    ],
)
def test_a_call_too_large_for_one_request_raises_at_the_call(
    server: FakeKlaviyo, blueprint: Blueprint, call: Callable[[Client], Delivery]
) -> None:
    """A call whose fields are each legal but which cannot fit one request raises, both modes."""
    for sync_mode in (True, False):
        with (
            Client(
                PUBLIC_KEY,
                PRIVATE_KEY,
                base_url=server.url,
                sync_mode=sync_mode,
                blueprint=blueprint,
            ) as client,
            pytest.raises(
                ValidationError,
                match=r"^properties: the (event|profile import) takes \d+ bytes as JSON",
            ),
        ):
            call(client)


def test_a_large_call_that_fits_is_delivered(server: FakeKlaviyo) -> None:
    """A 4 MB event is measured exactly and delivered, in both modes."""
    for sync_mode in (True, False):
        with Client(
            PUBLIC_KEY, PRIVATE_KEY, base_url=server.url, sync_mode=sync_mode, blueprint=BLUEPRINT
        ) as client:
            delivery = client.track("Custom", {f"p{i}": _BIG for i in range(40)}, user_id="big")
            assert client.flush(timeout=30)
            assert delivery.wait(timeout=30).status is DeliveryStatus.DELIVERED


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.track("Custom", {"consent": "yes"}, user_id="u"),
        lambda c: c.track("Custom", {"consent": "yes"}, user_id="u", context={"ip": "1.2.3.4"}),
        lambda c: c.page("Home", {"consent": {"marketing": True}}, user_id="u"),
    ],
)
def test_a_callers_consent_property_is_refused(
    client: Client, call: Callable[[Client], Delivery]
) -> None:
    """A caller's own 'consent' property raises ValidationError rather than being replaced."""
    with pytest.raises(
        ValidationError, match=r"^properties\.consent: the event property 'consent' is reserved"
    ):
        call(client)


def test_a_renamed_consent_property_is_sent(server: FakeKlaviyo) -> None:
    """A rule that renames the caller's 'consent' property sends it under the new name."""
    blueprint = Blueprint(
        rules={
            "Agreed": Rule(
                metric="agreed", properties=PropertyMap(rename={"consent": "consent_value"})
            )
        }
    )
    with Client(
        PUBLIC_KEY, PRIVATE_KEY, base_url=server.url, sync_mode=True, blueprint=blueprint
    ) as client:
        client.track("Agreed", {"consent": "yes"}, user_id="renamer", consent={"marketing": True})
    [event] = server.events_for(external_id="renamer")
    assert event.properties["consent_value"] == "yes"
    assert event.properties["consent"] == {"marketing": True}


@pytest.mark.parametrize(
    "build",
    [
        lambda: Rule(metric="m", properties=PropertyMap(constants={"consent": "x"})),
        lambda: Rule(metric="m", properties=PropertyMap(rename={"agreed": "consent"})),
        lambda: Rule(metric="m", properties=PropertyMap(keep=("consent",))),
        lambda: Rule(metric="m", properties=PropertyMap(defaults={"consent": True})),
        lambda: Rule(metric="m", properties=PropertyMap(sources={"consent": "context.ip"})),
    ],
)
def test_a_rule_cannot_write_the_consent_property(build: Callable[[], object]) -> None:
    """A blueprint rule that would set the 'consent' event property is refused when built."""
    with pytest.raises(ValidationError, match="'consent' is reserved"):
        build()


def test_a_mapper_cannot_write_the_consent_property(server: FakeKlaviyo) -> None:
    """A mapper returning a 'consent' key raises ValidationError at the call."""
    blueprint = default_blueprint().enable("M", mapper=lambda message: {"consent": 1})
    with (
        Client(
            PUBLIC_KEY, PRIVATE_KEY, base_url=server.url, sync_mode=True, blueprint=blueprint
        ) as client,
        pytest.raises(
            ValidationError, match=r"^mapper .*: consent: the event property 'consent' is reserved"
        ),
    ):
        client.track("M", {}, user_id="u")
