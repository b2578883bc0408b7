"""Tests for klaviyo_signal._calls.message: turning a Segment call into a checked Message."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from klaviyo_signal._calls.message import Message, build_message
from klaviyo_signal._errors import ValidationError
from klaviyo_signal._klaviyo.models import Identity

NOW = datetime(2024, 10, 15, 12, 0, tzinfo=timezone.utc)


def track(**kwargs: Any) -> Message:
    """Build a track message for user 'u1' at NOW, with overrides."""
    kwargs.setdefault("event", "Order Completed")
    kwargs.setdefault("user_id", "u1")
    kwargs.setdefault("now", NOW)
    return build_message("track", **kwargs)


def test_track_message_fields() -> None:
    """A track call keeps its event, cleaned properties, ids and identity."""
    message = track(
        properties={"total": Decimal("19.99"), "items": ({"sku": "A1"},)},
        traits={"email": "ada@example.com"},
        anonymous_id=99,
        message_id="m-1",
    )
    assert message.kind == "track"
    assert message.event == "Order Completed"
    assert message.name is None
    assert message.properties == {"total": Decimal("19.99"), "items": [{"sku": "A1"}]}
    assert message.user_id == "u1"
    assert message.anonymous_id == "99"
    assert message.message_id == "m-1"
    assert message.timestamp == NOW
    assert message.consent == {}
    assert message.identity == Identity(
        email="ada@example.com", external_id="u1", anonymous_id="99"
    )


def test_message_is_frozen() -> None:
    """A Message cannot be changed after it is built."""
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        track().event = "Other"  # type: ignore[misc]


def test_identify_and_page_messages() -> None:
    """identify has neither event nor name; page has an optional name."""
    identify = build_message("identify", traits={"email": "a@b.co"}, now=NOW)
    assert (identify.kind, identify.event, identify.name) == ("identify", None, None)
    page = build_message(
        "page", name="Pricing", anonymous_id="a", properties={"path": "/p"}, now=NOW
    )
    assert (page.event, page.name, page.properties) == (None, "Pricing", {"path": "/p"})
    assert build_message("page", anonymous_id="a", now=NOW).name is None


@pytest.mark.parametrize(
    ("kind", "kwargs", "pattern"),
    [
        ("identify", {"event": "X"}, r"^event: only track calls take an event name"),
        ("page", {"event": "X"}, r"^event: only track calls take an event name"),
        ("track", {"event": "X", "name": "Y"}, r"^name: only page calls take a name"),
        ("identify", {"properties": {"a": 1}}, r"^properties: identify calls take traits"),
        ("alias", {}, r"^kind: 'alias' is not one of"),
    ],
)
def test_arguments_that_the_kind_does_not_take(
    kind: Any, kwargs: dict[str, Any], pattern: str
) -> None:
    """An argument the call kind would ignore fails instead of being dropped."""
    with pytest.raises(ValidationError, match=pattern):
        build_message(kind, user_id="u", now=NOW, **kwargs)


@pytest.mark.parametrize(
    ("event", "pattern"),
    [
        (None, r"^event: must be a str naming the event, got a value of type NoneType$"),
        (5, r"^event: must be a str .* type int$"),
        ("", r"^event: must not be empty$"),
        ("  ", r"^event: must not be empty$"),
        ("E" * 128, r"^event: .* 128 characters; it must be fewer than 128 characters \(Klaviyo's"),
    ],
)
def test_bad_event_names(event: object, pattern: str) -> None:
    """The event name must be a non-blank str of fewer than 128 characters."""
    with pytest.raises(ValidationError, match=pattern):
        track(event=event)


def test_event_name_is_not_stripped() -> None:
    """A 127-character event name is accepted and kept exactly, spaces included."""
    assert track(event=" Viewed ").event == " Viewed "
    assert track(event="E" * 127).event == "E" * 127


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        (3, r"^name: must be a str or None, got a value of type int$"),
        ("", r"^name: must not be empty; pass None"),
        ("P" * 128, r"^name: .*must be fewer than 128 characters"),
    ],
)
def test_bad_page_names(name: object, pattern: str) -> None:
    """A page name must be None or a non-blank str of fewer than 128 characters."""
    with pytest.raises(ValidationError, match=pattern):
        build_message("page", name=name, user_id="u", now=NOW)


def test_properties_are_limited_to_300() -> None:
    """Event properties over 300 keys fail; traits and context have no key limit."""
    with pytest.raises(ValidationError, match=r"^properties: 301 keys .*over 300 event properties"):
        track(properties={f"k{i}": i for i in range(301)})
    many = {f"k{i}": i for i in range(400)}
    message = track(traits=many, context=many)
    assert len(message.traits) == len(message.context) == 400


def test_bad_values_are_reported_with_their_section() -> None:
    """A bad value in properties, traits or context names its section in the path."""
    with pytest.raises(ValidationError, match=r"^properties\.items\[0\]\.price: "):
        track(properties={"items": [{"price": float("nan")}]})
    with pytest.raises(ValidationError, match=r"^traits\.avatar: a value of type bytes"):
        track(traits={"avatar": b"\x89PNG"})
    with pytest.raises(ValidationError, match=r"^context\.ip: a value of type object"):
        track(context={"ip": object()})


def test_traits_merge_over_context_traits() -> None:
    """Explicit traits win key by key over context['traits']; the others are kept."""
    message = track(
        traits={"name": "Ada"}, context={"traits": {"name": "Old", "email": "ada@example.com"}}
    )
    assert message.traits == {"name": "Ada", "email": "ada@example.com"}
    assert message.identity.email == "ada@example.com"


def test_context_traits_alone_identify() -> None:
    """With no traits=, context['traits'] supplies traits and identifiers."""
    message = build_message(
        "page", context={"traits": {"phone": "+1 415 555 0100"}}, traits={}, now=NOW
    )
    assert message.traits == {"phone": "+1 415 555 0100"}
    assert message.identity.phone_number == "+14155550100"


def test_context_traits_must_be_an_object() -> None:
    """context['traits'] that is not an object fails, naming the path."""
    with pytest.raises(ValidationError, match=r"^context\.traits: must be an object"):
        track(context={"traits": ["ada@example.com"]})


def test_identity_is_checked_for_every_kind() -> None:
    """A call without an identifier fails at build time, identify included."""
    for kind, kwargs in [("identify", {}), ("track", {"event": "X"}), ("page", {})]:
        with pytest.raises(ValidationError, match=r"^no profile identifier"):
            build_message(kind, traits={"name": "Ada"}, now=NOW, **kwargs)  # type: ignore[arg-type]


def test_bad_identifiers_fail_with_their_path() -> None:
    """Malformed emails, phones and ids fail with the field's path."""
    with pytest.raises(ValidationError, match=r"^traits\.email: 'nope' is not a valid email"):
        track(traits={"email": "nope"})
    with pytest.raises(ValidationError, match=r"^traits\.phone: '07911 123456' is not an E\.164"):
        track(traits={"phone": "07911 123456"})
    with pytest.raises(ValidationError, match=r"^user_id: must not be empty"):
        track(user_id="")


def test_default_phone_region_is_used() -> None:
    """default_phone_region lets a local number through as E.164."""
    message = track(traits={"phone": "07911 123456"}, default_phone_region="GB")
    assert message.identity.phone_number == "+447911123456"
    assert message.traits == {"phone": "07911 123456"}


def test_consent_is_resolved() -> None:
    """consent= is merged over the context's category preferences."""
    context = {"consent": {"categoryPreferences": {"Marketing": True, "Ads": False}}}
    message = track(consent={"marketing": False}, context=context)
    assert message.consent == {"Ads": False, "marketing": False}
    with pytest.raises(ValidationError, match=r"^consent\['marketing'\]: must be True or False"):
        track(consent={"marketing": "yes"})


def test_timestamp_defaults_to_now() -> None:
    """Without a timestamp the message is stamped with now, in UTC."""
    assert track().timestamp == NOW
    before = datetime.now(timezone.utc)
    stamped = build_message("track", event="X", user_id="u").timestamp
    assert before <= stamped <= datetime.now(timezone.utc)
    assert stamped.tzinfo is timezone.utc


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2024, 1, 2, 3, 4, 5), datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        (
            datetime(2024, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))),
            datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        ),
        ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        ("2024-01-02T03:04:05.123z", datetime(2024, 1, 2, 3, 4, 5, 123000, tzinfo=timezone.utc)),
        ("2024-01-02T05:04:05+02:00", datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        ("2024-01-02T03:04:05", datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        ("2000-01-01T00:00:00Z", datetime(2000, 1, 1, tzinfo=timezone.utc)),
    ],
)
def test_timestamp_forms(value: object, expected: datetime) -> None:
    """Datetimes and ISO 8601 strings (naive = UTC, 'Z' accepted) become aware UTC times."""
    stamp = track(timestamp=value).timestamp
    assert stamp == expected
    assert stamp.utcoffset() == timedelta(0)


def test_timestamp_before_2000_is_rejected() -> None:
    """A timestamp before 2000-01-01 UTC fails, naming Klaviyo's rule."""
    with pytest.raises(ValidationError) as info:
        track(timestamp="1999-12-31T23:59:59Z")
    assert str(info.value) == (
        "timestamp: 1999-12-31T23:59:59+00:00 is before 2000-01-01; "
        "Klaviyo rejects events before the year 2000"
    )
    with pytest.raises(ValidationError, match=r"before 2000-01-01"):
        track(timestamp=datetime.min.replace(tzinfo=timezone(timedelta(hours=5))))


def test_timestamp_more_than_a_year_ahead_is_rejected() -> None:
    """A timestamp more than 365 days after now fails; exactly 365 days is accepted."""
    assert track(timestamp=NOW + timedelta(days=365)).timestamp == NOW + timedelta(days=365)
    with pytest.raises(ValidationError, match=r"^timestamp: 2025-10-15T12:00:01\+00:00 is more"):
        track(timestamp=NOW + timedelta(days=365, seconds=1))
    with pytest.raises(ValidationError, match=r"over a year in the future"):
        track(timestamp=datetime.max.replace(tzinfo=timezone(timedelta(hours=-5))))


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("yesterday", r"^timestamp: 'yesterday' is not an ISO 8601 date-time"),
        ("", r"^timestamp: '' is not an ISO 8601"),
        (1729000000, r"^timestamp: must be a datetime or an ISO 8601 str, got .* int$"),
    ],
)
def test_bad_timestamps(value: object, pattern: str) -> None:
    """Unparseable strings and other types fail with the rule."""
    with pytest.raises(ValidationError, match=pattern):
        track(timestamp=value)


def test_message_id_forms() -> None:
    """message_id defaults to a fresh uuid4, and accepts a str or UUID."""
    generated = track().message_id
    assert uuid.UUID(generated).version == 4
    assert track().message_id != generated
    uid = uuid.UUID(int=5)
    assert track(message_id=uid).message_id == str(uid)
    assert track(message_id="x" * 255).message_id == "x" * 255


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("", r"^message_id: must not be empty$"),
        ("x" * 256, r"^message_id: 256 characters is over the limit of 255$"),
        (12, r"^message_id: must be a str or UUID, got a value of type int$"),
        ("m-\ud800", r"^message_id: the string contains a lone surrogate"),
    ],
)
def test_bad_message_ids(value: object, pattern: str) -> None:
    """Empty, overlong, non-str and undecodable message ids fail."""
    with pytest.raises(ValidationError, match=pattern):
        track(message_id=value)


@given(
    st.dictionaries(
        st.text(max_size=20),
        st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False),
        max_size=20,
    )
)
def test_any_properties_build_or_fail_cleanly(properties: dict[str, Any]) -> None:
    """Scalar properties are kept unchanged, except infinities, which fail naming the key."""
    infinite = [k for k, v in properties.items() if isinstance(v, float) and math.isinf(v)]
    if infinite:
        with pytest.raises(ValidationError, match=r"^properties.* is not a finite number"):
            track(properties=properties)
    else:
        assert track(properties=properties).properties == properties


def test_naive_now_is_utc() -> None:
    """A naive now= is taken as UTC, like naive timestamps."""
    assert track(now=NOW.replace(tzinfo=None)).timestamp == NOW


def test_generated_message_ids_are_uuid4() -> None:
    """Ids made for calls without one are distinct RFC 4122 version 4 UUID strings."""
    import uuid as uuid_module

    from klaviyo_signal._calls.message import new_message_id

    ids = [new_message_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid_module.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid_module.RFC_4122, text)
