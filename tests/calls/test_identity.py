"""The identity rules (_calls/identity.py): email, phone and id, and the Identity they form."""

from __future__ import annotations

import builtins
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klaviyo_signal._calls.identity import (
    E164,
    Identity,
    identity_from,
    normalize_email,
    normalize_id,
    normalize_phone,
)
from klaviyo_signal._errors import ValidationError

NO_IDENTIFIER = (
    "no profile identifier: pass user_id, anonymous_id, traits['email'] or traits['phone']; "
    "Klaviyo needs one of email, phone_number, external_id or anonymous_id"
)


@pytest.mark.parametrize(
    ("raw", "email"),
    [
        ("ada@example.com", "ada@example.com"),
        ("  Ada.Lovelace+news@Example.co.uk\n", "Ada.Lovelace+news@Example.co.uk"),
    ],
)
def test_email_is_stripped_and_keeps_case(raw: str, email: str) -> None:
    """Surrounding whitespace is stripped from an email; its case is kept."""
    assert normalize_email(raw, "traits.email") == email


@pytest.mark.parametrize(
    "bad", ["x", "ada@example", "ada@@example.com", "a da@example.com", "ada@example.", "@x.com"]
)
def test_malformed_email_is_rejected(bad: str) -> None:
    """A value that is not local@domain.tld fails with the path and the value."""
    with pytest.raises(ValidationError) as info:
        normalize_email(bad, "traits.email")
    assert str(info.value) == f"traits.email: {bad!r} is not a valid email address"


def test_long_email_is_rejected() -> None:
    """An email over 254 characters fails, naming the limit."""
    with pytest.raises(ValidationError, match=r"^traits\.email: .*255 characters.*254"):
        normalize_email("a" * 243 + "@example.com", "traits.email")


def test_email_must_be_a_non_empty_str() -> None:
    """An empty or non-str email fails with the path."""
    with pytest.raises(ValidationError, match=r"^traits\.email: must not be empty$"):
        normalize_email("  ", "traits.email")
    with pytest.raises(ValidationError, match=r"^traits\.email: must be a str .* type int"):
        normalize_email(42, "traits.email")


@pytest.mark.parametrize(
    ("raw", "phone"),
    [
        ("+447700900123", "+447700900123"),
        ("+44 7700 900123", "+447700900123"),
        ("+1 (415) 555-0100", "+14155550100"),
        ("+1.415.555.0100", "+14155550100"),
        (" +14155550100 ", "+14155550100"),
    ],
)
def test_phone_separators_are_removed(raw: str, phone: str) -> None:
    """E.164 numbers are kept, and spaces, dots, dashes and parentheses are removed."""
    assert normalize_phone(raw, "traits.phone", None) == phone


def test_local_phone_without_region_explains_the_fix() -> None:
    """A number not in E.164 form fails, explaining E.164 and default_phone_region."""
    with pytest.raises(ValidationError) as info:
        normalize_phone("07700 900123", "traits.phone", None)
    assert str(info.value) == (
        "traits.phone: '07700 900123' is not an E.164 phone number (+ then country code and "
        "number, e.g. +447700900123); pass default_phone_region='GB' with the 'phone' extra "
        "to accept local numbers"
    )


@pytest.mark.parametrize("bad", ["+44 7700 900123 ext 5", "+0123456", "+1/415/555/0100", "+١٢٣٤٥"])
def test_other_characters_are_not_removed(bad: str) -> None:
    """Only the listed separators are removed, and only ASCII digits count."""
    with pytest.raises(ValidationError, match=r"is not an E\.164 phone number"):
        normalize_phone(bad, "traits.phone", None)


def test_trailing_newline_does_not_pass_the_regex() -> None:
    """E164 is used with fullmatch, so a newline after the digits is not E.164."""
    assert E164.fullmatch("+447700900123\n") is None


def test_int_phone_suggests_a_plus_string() -> None:
    """An int phone number fails, asking for a str starting with '+'."""
    with pytest.raises(ValidationError, match=r"^traits\.phone: 447700900123 is a number; .*'\+'"):
        normalize_phone(447700900123, "traits.phone", None)


def test_local_phone_with_region_uses_phonenumbers() -> None:
    """With a default region, a valid local number becomes E.164."""
    assert normalize_phone("07911 123456", "traits.phone", "GB") == "+447911123456"
    assert normalize_phone("020 7946 0018", "traits.phone", "GB") == "+442079460018"


def test_region_parsing_is_only_a_fallback() -> None:
    """A number already E.164 after removing separators is not checked against the region."""
    assert normalize_phone("+1 (415) 555-0100", "traits.phone", "GB") == "+14155550100"


def test_invalid_local_phone_with_region_fails() -> None:
    """With a default region, a number phonenumbers deems invalid fails, naming the region."""
    with pytest.raises(ValidationError, match=r"^traits\.phone: '123' is not a valid .*'GB'"):
        normalize_phone("123", "traits.phone", "GB")
    # Ofcom's drama range 07700 900xxx is not a real mobile number, so phonenumbers refuses it.
    with pytest.raises(ValidationError, match=r"'07700 900123' is not a valid phone number"):
        normalize_phone("07700 900123", "traits.phone", "GB")
    with pytest.raises(ValidationError, match=r"not a valid phone number"):
        normalize_phone("not a number", "traits.phone", "GB")


def test_region_without_phonenumbers_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the phone extra installed, a local number fails with the pip command."""
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "phonenumbers":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ValidationError, match=r"pip install 'klaviyo-signal\[phone\]'"):
        normalize_phone("07700 900123", "traits.phone", "GB")
    assert normalize_phone("+447700900123", "traits.phone", "GB") == "+447700900123"


@pytest.mark.parametrize(("raw", "text"), [("u-1", "u-1"), (42, "42"), ("x" * 255, "x" * 255)])
def test_ids_accept_str_and_int(raw: object, text: str) -> None:
    """A user id may be a str or an int; an int becomes its digits."""
    assert normalize_id(raw, "user_id") == text


@pytest.mark.parametrize(
    ("bad", "rule"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("x" * 256, "256 characters is over Klaviyo's limit of 255 for an id"),
        (True, "must be a str or int, got a value of type bool"),
        (1.5, "must be a str or int, got a value of type float"),
    ],
)
def test_bad_ids_are_rejected(bad: object, rule: str) -> None:
    """Empty, overlong and non-str/int ids fail with the path and the rule."""
    with pytest.raises(ValidationError) as info:
        normalize_id(bad, "anonymous_id")
    assert str(info.value) == f"anonymous_id: {rule}"


def test_identity_from_maps_all_four() -> None:
    """email, phone, user_id and anonymous_id become Klaviyo's four identifiers."""
    identity = identity_from(
        traits={"email": " ada@example.com ", "phone": "+44 7700 900123", "name": "Ada"},
        user_id=7,
        anonymous_id="anon-1",
        default_region=None,
    )
    assert identity.as_attributes() == {
        "email": "ada@example.com",
        "phone_number": "+447700900123",
        "external_id": "7",
        "anonymous_id": "anon-1",
    }


def test_as_attributes_lists_only_set_identifiers() -> None:
    """as_attributes leaves out identifiers that were not given."""
    identity = identity_from(
        traits={"email": None}, user_id=None, anonymous_id="a", default_region=None
    )
    assert identity == Identity(anonymous_id="a")
    assert identity.as_attributes() == {"anonymous_id": "a"}


def test_phone_number_trait_is_accepted() -> None:
    """traits['phone_number'] is read when traits['phone'] is absent."""
    identity = identity_from(
        traits={"phone_number": "+14155550100"},
        user_id=None,
        anonymous_id=None,
        default_region=None,
    )
    assert identity.phone_number == "+14155550100"


def test_phone_and_phone_number_must_agree() -> None:
    """Two different phone traits fail instead of one being dropped; equal ones are fine."""
    same = identity_from(
        traits={"phone": "+1 415 555 0100", "phone_number": "+14155550100"},
        user_id=None,
        anonymous_id=None,
        default_region=None,
    )
    assert same.phone_number == "+14155550100"
    with pytest.raises(ValidationError, match=r"^traits\.phone_number: .* different numbers"):
        identity_from(
            traits={"phone": "+14155550100", "phone_number": "+447700900123"},
            user_id=None,
            anonymous_id=None,
            default_region=None,
        )


def test_empty_email_trait_is_an_error_not_absence() -> None:
    """An empty email fails, unlike None, which means not given."""
    with pytest.raises(ValidationError, match=r"^traits\.email: must not be empty$"):
        identity_from(traits={"email": ""}, user_id="u", anonymous_id=None, default_region=None)


def test_no_identifier_is_an_error() -> None:
    """A call with no identifier at all fails, saying what to pass."""
    with pytest.raises(ValidationError) as info:
        identity_from(traits={"name": "Ada"}, user_id=None, anonymous_id=None, default_region=None)
    assert str(info.value) == NO_IDENTIFIER


def test_identity_needs_one_identifier() -> None:
    """An Identity built directly must still hold at least one non-empty identifier."""
    with pytest.raises(ValidationError, match=r"^no profile identifier"):
        Identity()
    with pytest.raises(ValidationError, match=r"^email: must be a non-empty str"):
        Identity(email="")


@given(st.from_regex(r"\+[1-9][0-9]{1,14}", fullmatch=True), st.data())
def test_separated_e164_numbers_normalize(number: str, data: st.DataObject) -> None:
    """Any E.164 number, split up with the allowed separators, normalizes back to itself."""
    out = [number[:2]]
    for digit in number[2:]:
        out.append(data.draw(st.sampled_from(["", " ", "-", ".", "(", ")", " - "])))
        out.append(digit)
    assert normalize_phone("".join(out), "traits.phone", None) == number


@given(
    st.dictionaries(
        st.sampled_from(["email", "phone", "phone_number", "name"]),
        st.none() | st.text() | st.integers(),
    ),
    st.none() | st.text() | st.integers(),
    st.none() | st.text(),
    st.sampled_from([None, "GB", "US"]),
)
def test_random_input_fails_only_with_validation_error(
    traits: dict[str, Any], user_id: object, anonymous_id: object, region: str | None
) -> None:
    """Whatever strings come in, identity_from returns an Identity or raises ValidationError."""
    try:
        identity = identity_from(
            traits=traits, user_id=user_id, anonymous_id=anonymous_id, default_region=region
        )
    except ValidationError:
        return
    attributes = identity.as_attributes()
    assert attributes
    if "phone_number" in attributes:
        assert E164.fullmatch(attributes["phone_number"])


def test_non_str_phone_is_rejected() -> None:
    """A phone number that is neither str nor int fails with the path and the expected form."""
    with pytest.raises(ValidationError, match=r"^traits\.phone: must be a str phone number .*list"):
        normalize_phone(["+447911123456"], "traits.phone", None)
