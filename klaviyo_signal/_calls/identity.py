"""Who a call is about: the four profile identifiers Klaviyo accepts, validated.

Klaviyo answers 400 to an event without an identifier and drops events whose phone number
is not E.164; checking here turns both into an error on the caller's line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeGuard

from .._errors import ValidationError
from .._klaviyo.json import JSON, check_str
from .._klaviyo.models import Identity

__all__ = [
    "E164",
    "identity_from",
    "normalize_email",
    "normalize_id",
    "normalize_phone",
    "plain_email",
    "plain_id",
]

# ASCII digits only (a str pattern's \d would take any Unicode digit), and used with fullmatch
# so a trailing newline does not slip past ``$``.
E164 = re.compile(r"^\+[1-9]\d{1,14}$", re.ASCII)
# One @, no whitespace, a dot in the domain and no empty domain label. Deliberately loose:
# the mailbox's existence is Klaviyo's business; this only catches values that are no address.
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+")
_MAX_EMAIL = 254
_MAX_ID = 255
# Only these separators are removed: anything else (letters, "ext", a leading 0) needs a region.
_PHONE_SEPARATORS = str.maketrans("", "", " .-()")
_PHONE_EXAMPLE = "+ then country code and number, e.g. +447700900123"


def normalize_email(value: object, path: str) -> str:
    """Return the email address with surrounding whitespace stripped; case is kept.

    Raises:
        ValidationError: not a str, empty, over 254 characters, or not ``local@domain.tld``.
    """
    if plain_email(value):
        return value  # the common case, in one test
    if not isinstance(value, str):
        raise ValidationError(
            f"{path}: must be a str email address, got a value of type {type(value).__name__}"
        )
    email = value.strip()
    if not email:
        raise ValidationError(f"{path}: must not be empty")
    if len(email) > _MAX_EMAIL:
        raise ValidationError(
            f"{path}: the email address is {len(email)} characters, over the limit of {_MAX_EMAIL}"
        )
    if not _EMAIL.fullmatch(email):
        raise ValidationError(f"{path}: {value!r} is not a valid email address")
    return check_str(email, path)  # a lone surrogate cannot be sent


def plain_email(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a plain str that is a valid email address exactly as it is.

    The common case, in one test (``_EMAIL`` admits no whitespace, so there is none to
    strip); anything else goes through ``normalize_email``, which says what is wrong.
    """
    return (
        type(value) is str
        and len(value) <= _MAX_EMAIL
        and value.isascii()  # nothing to check for lone surrogates
        and _EMAIL.fullmatch(value) is not None
    )


def plain_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a plain ASCII str that is a valid user or anonymous id as it is."""
    return (
        type(value) is str and 0 < len(value) <= _MAX_ID and value.isascii() and not value.isspace()
    )


def normalize_phone(value: object, path: str, default_region: str | None) -> str:
    """Return the phone number in E.164 form (``+447700900123``).

    An E.164 number is kept. Spaces, dots, dashes and parentheses are removed when that
    leaves an E.164 number (``+1 (415) 555-0100`` -> ``+14155550100``). Anything else is
    parsed with ``phonenumbers`` as a number of ``default_region``, if one is set.

    Raises:
        ValidationError: not a str, empty, or not a phone number by the rules above.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValidationError(
            f"{path}: {value!r} is a number; pass the phone number as a str starting with '+' "
            f"({_PHONE_EXAMPLE})"
        )
    if not isinstance(value, str):
        raise ValidationError(
            f"{path}: must be a str phone number ({_PHONE_EXAMPLE}), "
            f"got a value of type {type(value).__name__}"
        )
    phone = value.strip()
    if not phone:
        raise ValidationError(f"{path}: must not be empty")
    if E164.fullmatch(phone):
        return phone
    compact = phone.translate(_PHONE_SEPARATORS)
    if E164.fullmatch(compact):
        return compact
    if default_region is None:
        raise ValidationError(
            f"{path}: {value!r} is not an E.164 phone number ({_PHONE_EXAMPLE}); "
            "pass default_phone_region='GB' with the 'phone' extra to accept local numbers"
        )
    return _parse_local(phone, value, path, default_region)


def _parse_local(phone: str, value: str, path: str, region: str) -> str:
    try:
        import phonenumbers  # noqa: PLC0415 - an optional extra, imported only when needed
    except ImportError:
        raise ValidationError(
            f"{path}: {value!r} is not an E.164 phone number ({_PHONE_EXAMPLE}), and reading "
            f"it as a {region} number needs the 'phonenumbers' package: "
            "pip install 'klaviyo-signal[phone]'"
        ) from None
    try:
        parsed = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is None or not phonenumbers.is_valid_number(parsed):
        raise ValidationError(
            f"{path}: {value!r} is not a valid phone number, neither in E.164 form "
            f"({_PHONE_EXAMPLE}) nor as a local number of region {region!r}"
        )
    result: str = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return result


def normalize_id(value: object, path: str) -> str:
    """Return a user id or anonymous id as a str (an int becomes its decimal digits).

    Raises:
        ValidationError: not a str or int, empty or only whitespace, or over 255 characters.
    """
    if plain_id(value):
        return value  # the common case, in one test
    if isinstance(value, str):
        text = str.__str__(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(int(value))
    else:
        raise ValidationError(
            f"{path}: must be a str or int, got a value of type {type(value).__name__}"
        )
    if not text.strip():
        raise ValidationError(f"{path}: must not be empty")
    if len(text) > _MAX_ID:
        raise ValidationError(
            f"{path}: {len(text)} characters is over Klaviyo's limit of {_MAX_ID} for an id"
        )
    return check_str(text, path)  # a lone surrogate cannot be sent


def identity_from(
    *,
    traits: Mapping[str, JSON],
    user_id: object,
    anonymous_id: object,
    default_region: str | None,
) -> Identity:
    """Return the Identity a call names, from its traits and ids.

    ``traits["email"]`` gives ``email``; ``traits["phone"]`` (or ``traits["phone_number"]``)
    gives ``phone_number``; ``user_id`` gives ``external_id``. A None value counts as not given.

    Raises:
        ValidationError: an identifier is malformed, ``phone`` and ``phone_number`` disagree,
            or no identifier is given at all.
    """
    email = traits.get("email")
    if email is not None:
        email = normalize_email(email, "traits.email")
    phone = _phone_from(traits, default_region)
    external = None if user_id is None else normalize_id(user_id, "user_id")
    anonymous = None if anonymous_id is None else normalize_id(anonymous_id, "anonymous_id")
    # Identity refuses a call with no identifier.
    return Identity(email=email, phone_number=phone, external_id=external, anonymous_id=anonymous)


def _phone_from(traits: Mapping[str, JSON], default_region: str | None) -> str | None:
    if "phone" not in traits and "phone_number" not in traits:
        return None
    raw_phone = traits.get("phone")
    raw_number = traits.get("phone_number")
    phone = (
        None if raw_phone is None else normalize_phone(raw_phone, "traits.phone", default_region)
    )
    number = (
        None
        if raw_number is None
        else normalize_phone(raw_number, "traits.phone_number", default_region)
    )
    if phone is not None and number is not None and phone != number:
        raise ValidationError(
            f"traits.phone_number: {raw_number!r} and traits.phone {raw_phone!r} are different "
            "numbers; pass one of them"
        )
    return phone if phone is not None else number
