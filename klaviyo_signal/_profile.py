"""Segment-spec traits -> a Klaviyo profile (standard attributes, location, properties).

Traits Klaviyo has a standard attribute for go there; every other trait goes to the
profile's custom ``properties``, so nothing a caller sends is lost.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._errors import ValidationError
from ._json import JSON
from ._messages import Message
from ._models import Location, Profile

__all__ = ["profile_from"]

# Trait -> Klaviyo attribute; the first trait present wins.
_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "first_name": ("firstName", "first_name"),
    "last_name": ("lastName", "last_name"),
    "title": ("title",),
    "image": ("avatar", "image"),
}
# Segment address key -> Klaviyo location key.
_ADDRESS: dict[str, tuple[str, ...]] = {
    "address1": ("street",),
    "city": ("city",),
    "region": ("state",),
    "zip": ("postalCode", "postal_code"),
    "country": ("country",),
}
# Traits consumed as identifiers or attributes, so they do not repeat in properties.
_CONSUMED = frozenset(
    {"email", "phone", "phone_number", "company", "organization", "address"}
    | {trait for traits in _ATTRIBUTES.values() for trait in traits}
)


def _text(traits: Mapping[str, JSON], names: tuple[str, ...], path: str) -> str | None:
    for name in names:
        value = traits.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValidationError(
                f"{path}.{name}: must be a string for Klaviyo's profile, got {value!r}"
            )
        return value
    return None


def _organization(traits: Mapping[str, JSON]) -> str | None:
    company = traits.get("company")
    if isinstance(company, Mapping):
        return _text(company, ("name",), "traits.company")
    if company is not None:
        return _text(traits, ("company",), "traits")
    return _text(traits, ("organization",), "traits")


def _location(traits: Mapping[str, JSON]) -> Location | None:
    address = traits.get("address")
    if address is None:
        return None
    if not isinstance(address, Mapping):
        raise ValidationError(
            f"traits.address: must be a mapping with street, city, state, postalCode, "
            f"country; got {address!r}"
        )
    fields = {
        target: _text(address, sources, "traits.address") for target, sources in _ADDRESS.items()
    }
    if not any(fields.values()):
        return None
    return Location(**fields)


def profile_from(message: Message, *, full: bool) -> Profile:
    """Build the Klaviyo profile a call names.

    Args:
        message: The cleaned call.
        full: Map every trait (identify, or an event that carries traits); otherwise only
            the identifiers are sent.
    """
    if not full:
        return Profile(identity=message.identity)
    traits = message.traits
    attributes = {
        target: _text(traits, sources, "traits") for target, sources in _ATTRIBUTES.items()
    }
    return Profile(
        identity=message.identity,
        organization=_organization(traits),
        location=_location(traits),
        properties={k: v for k, v in traits.items() if k not in _CONSUMED},
        **attributes,
    )
