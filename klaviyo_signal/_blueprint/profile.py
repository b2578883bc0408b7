"""Segment-spec traits -> a Klaviyo profile (standard attributes, location, properties).

Traits Klaviyo has a standard attribute for go there (as the blueprint's ``ProfileMap``
says); every other trait goes to the profile's custom ``properties``, so nothing a caller
sends is lost.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from .._calls.message import Message
from .._errors import ValidationError
from .._klaviyo.json import JSON
from .._klaviyo.models import Location, Profile
from .paths import MISSING, lookup, message_view
from .properties import apply_properties
from .rules import ProfileMap

__all__ = ["bare", "consumed_traits", "identifier_traits_are_bare", "profile_from"]

# Traits that are identifiers: mapped by ``_calls/identity.py``, never repeated in properties.
_IDENTIFIERS = frozenset({"email", "phone", "phone_number"})
# Location fields Klaviyo also accepts as numbers.
_NUMERIC = frozenset({"latitude", "longitude"})


def consumed_traits(mapping: ProfileMap) -> frozenset[str]:
    """Return the top-level traits that feed an identifier, an attribute or the location."""
    names = set(_IDENTIFIERS)
    for sources in (*mapping.attributes.values(), *mapping.location.values()):
        for path in sources:
            root, _, rest = path.partition(".")
            if root == "traits" and rest:
                names.add(rest.partition(".")[0])
    return frozenset(names)


def _value(view: Mapping[str, JSON], target: str, sources: tuple[str, ...]) -> str | float | None:
    """Return the first present source; a source blocked by a non-object raises if none is."""
    blocked = None
    for path in sources:
        found = lookup(view, path)
        if found.value is MISSING:
            if blocked is None and found.blocked_at is not None:
                blocked = found
            continue
        value = found.value
        if value is None:
            continue
        numeric = target in _NUMERIC and isinstance(value, (int, float))
        if not isinstance(value, str) and not (numeric and not isinstance(value, bool)):
            raise ValidationError(
                f"{path}: must be a string for Klaviyo's profile {target}, got {value!r}"
            )
        return value  # type: ignore[return-value]
    if blocked is not None:
        raise ValidationError(
            f"{blocked.blocked_at}: must be an object to read {target} from it, "
            f"got {blocked.blocker!r}"
        )
    return None


@attrs.frozen
class _Plan:
    """A ProfileMap prepared once: which traits each target can read, what is consumed."""

    consumed: frozenset[str]
    # Every source reads traits and the properties map adds nothing of its own: a call
    # whose traits are only identifiers then maps to the bare identity.
    traits_only: bool
    # target -> (sources, the top-level traits they read or None if any reads elsewhere)
    attributes: tuple[tuple[str, tuple[str, ...], frozenset[str] | None], ...]
    location: tuple[tuple[str, tuple[str, ...], frozenset[str] | None], ...]


def _roots(sources: tuple[str, ...]) -> frozenset[str] | None:
    roots = set()
    for path in sources:
        root, _, rest = path.partition(".")
        if root != "traits" or not rest:
            return None
        roots.add(rest.partition(".")[0])
    return frozenset(roots)


_PLANS: dict[int, tuple[ProfileMap, _Plan]] = {}


def _plan(mapping: ProfileMap) -> _Plan:
    # Keyed by identity and holding the mapping, so an id is never reused while cached.
    cached = _PLANS.get(id(mapping))
    if cached is not None and cached[0] is mapping:
        return cached[1]
    targets = (*mapping.attributes.values(), *mapping.location.values())
    pmap = mapping.properties
    plan = _Plan(
        consumed=consumed_traits(mapping),
        traits_only=all(_roots(sources) is not None for sources in targets)
        and not (pmap.sources or pmap.defaults or pmap.constants),
        attributes=tuple((t, s, _roots(s)) for t, s in mapping.attributes.items()),
        location=tuple((t, s, _roots(s)) for t, s in mapping.location.items()),
    )
    if len(_PLANS) > 256:
        _PLANS.clear()
    _PLANS[id(mapping)] = (mapping, plan)
    return plan


def _values(
    view: Mapping[str, JSON],
    traits: Mapping[str, JSON],
    targets: tuple[tuple[str, tuple[str, ...], frozenset[str] | None], ...],
) -> dict[str, str | float | None]:
    # Skip a target whose sources all read traits the call does not have: most events
    # carry only an email, and this runs on the caller's thread.
    return {
        target: _value(view, target, sources)
        for target, sources, roots in targets
        if roots is None or not roots.isdisjoint(traits)
    }


_DEFAULT = ProfileMap()


def identifier_traits_are_bare(mapping: ProfileMap) -> bool:
    """Whether a call whose traits are only identifiers maps to the bare identity."""
    return _plan(mapping).traits_only


def bare(message: Message, mapping: ProfileMap) -> bool:
    """Whether an event's profile is just the identity (``profile_from`` then cannot fail).

    True when the call has no traits, or only identifier traits and every source of the
    mapping reads traits: the case of most events.
    """
    traits = message.traits
    return not traits or (_plan(mapping).traits_only and traits.keys() <= _IDENTIFIERS)


def profile_from(
    message: Message,
    *,
    full: bool,
    mapping: ProfileMap | None = None,
    view: Mapping[str, JSON] | None = None,
) -> Profile:
    """Build the Klaviyo profile a call names.

    Args:
        message: The cleaned call.
        full: Map every trait (identify, or an event that carries traits); otherwise only
            the identifiers are sent.
        mapping: How traits become attributes, location and properties; default the
            Segment-spec mapping of ``ProfileMap()``.
        view: ``message_view(message)``, when the caller already has it.
    """
    mapping = mapping or _DEFAULT
    if not full or bare(message, mapping):
        return Profile(identity=message.identity)
    traits = message.traits
    plan = _plan(mapping)
    view = message_view(message) if view is None else view
    attributes = _values(view, traits, plan.attributes)
    fields = _values(view, traits, plan.location)
    # An address of empty strings is no address: send no location rather than blanks.
    present = any(v is not None and v != "" for v in fields.values())
    location = Location(**fields) if present else None  # type: ignore[arg-type]
    remaining = {k: v for k, v in traits.items() if k not in plan.consumed}
    return Profile(
        identity=message.identity,
        location=location,
        properties=apply_properties(mapping.properties, remaining, view),
        **attributes,  # type: ignore[arg-type]
    )
