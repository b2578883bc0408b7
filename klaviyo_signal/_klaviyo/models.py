"""Klaviyo's objects as plain values: what the blueprint produces and the wire writes.

The models know nothing of JSON:API; ``_klaviyo/wire.py`` owns the ``data``/``attributes`` nesting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Literal, TypeAlias

import attrs

from .._errors import ValidationError
from .json import JSON

_NO_PROPERTIES: Mapping[str, JSON] = MappingProxyType({})

__all__ = [
    "IDENTIFIER_NAMES",
    "SUBSCRIBE_PATH",
    "UNSUBSCRIBE_PATH",
    "Action",
    "ClientProfile",
    "Event",
    "Identity",
    "KlaviyoObject",
    "Location",
    "Profile",
    "Subscription",
    "with_backfill",
]

# Klaviyo's names of the four identifiers, in the order of Identity.key().
IDENTIFIER_NAMES = ("email", "phone_number", "external_id", "anonymous_id")
_NO_IDENTIFIER = (
    "no profile identifier: pass user_id, anonymous_id, traits['email'] or traits['phone']; "
    "Klaviyo needs one of email, phone_number, external_id or anonymous_id"
)


def _optional_identifier(
    instance: object, attribute: attrs.Attribute[str | None], value: object
) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValidationError(f"{attribute.name}: must be a non-empty str or None, got {value!r}")


@attrs.frozen
class Identity:
    """The four profile identifiers Klaviyo accepts; at least one is set.

    Built by ``identity_from``, which normalizes each one; building it directly only checks
    that the set ones are non-empty strings.
    """

    email: str | None = attrs.field(default=None, validator=_optional_identifier)
    phone_number: str | None = attrs.field(default=None, validator=_optional_identifier)
    external_id: str | None = attrs.field(default=None, validator=_optional_identifier)
    anonymous_id: str | None = attrs.field(default=None, validator=_optional_identifier)

    def __attrs_post_init__(self) -> None:
        if (
            self.email is None
            and self.phone_number is None
            and self.external_id is None
            and self.anonymous_id is None
        ):
            raise ValidationError(_NO_IDENTIFIER)

    def key(self) -> tuple[str | None, str | None, str | None, str | None]:
        """Return the four identifiers in ``IDENTIFIER_NAMES`` order, None where unset.

        A tuple of strings, unlike the Identity: what queued calls and open jobs keep
        (``_blueprint/record`` says why).
        """
        return (self.email, self.phone_number, self.external_id, self.anonymous_id)

    def as_attributes(self) -> dict[str, str]:
        """Return the set identifiers under Klaviyo's profile attribute names."""
        out: dict[str, str] = {}
        if self.email is not None:
            out["email"] = self.email
        if self.phone_number is not None:
            out["phone_number"] = self.phone_number
        if self.external_id is not None:
            out["external_id"] = self.external_id
        if self.anonymous_id is not None:
            out["anonymous_id"] = self.anonymous_id
        return out


Action = Literal["subscribe", "unsubscribe"]
SUBSCRIBE_PATH = "/api/profile-subscription-bulk-create-jobs"
UNSUBSCRIBE_PATH = "/api/profile-subscription-bulk-delete-jobs"


@attrs.frozen
class Subscription:
    """One profile's consent change on one list (or the account's default opt-in)."""

    action: Action
    message_id: str
    channels: tuple[str, ...]
    email: str | None = None
    phone_number: str | None = None
    list_id: str | None = None
    custom_source: str | None = None
    consented_at: datetime | None = None

    @property
    def job_key(self) -> tuple[object, ...]:
        """Calls with the same key can share one bulk job (same list, source and import mode)."""
        return (self.action, self.list_id, self.custom_source, self.consented_at is not None)

    @property
    def path(self) -> str:
        """The Klaviyo endpoint this call goes to."""
        return SUBSCRIBE_PATH if self.action == "subscribe" else UNSUBSCRIBE_PATH


@attrs.frozen
class Location:
    """A profile's postal location, in Klaviyo's attribute names."""

    address1: str | None = None
    address2: str | None = None
    city: str | None = None
    region: str | None = None
    zip: str | None = None
    country: str | None = None
    latitude: float | str | None = None
    longitude: float | str | None = None


@attrs.frozen
class Profile:
    """A Klaviyo profile: its identifiers, the standard attributes and custom ``properties``."""

    identity: Identity
    first_name: str | None = None
    last_name: str | None = None
    organization: str | None = None
    title: str | None = None
    image: str | None = None
    locale: str | None = None
    location: Location | None = None
    # Most event profiles carry only identifiers: share one empty, read-only mapping
    # rather than hold an empty dict per queued event.
    properties: Mapping[str, JSON] = _NO_PROPERTIES

    def bare(self) -> bool:
        """Whether the profile carries nothing but its identifiers."""
        return (
            not self.properties
            and self.location is None
            and self.first_name is None
            and self.last_name is None
            and self.organization is None
            and self.title is None
            and self.image is None
            and self.locale is None
        )


@attrs.frozen
class Event:
    """One Klaviyo event: a metric recorded on a profile.

    ``unique_id`` makes a retried POST safe: Klaviyo records one event per profile, metric
    and unique_id.
    """

    metric: str
    profile: Profile
    properties: Mapping[str, JSON]
    time: datetime
    unique_id: str
    value: int | float | Decimal | None = None
    value_currency: str | None = None
    backfill: bool = False
    """Recorded without triggering flows (revisions that have the flag)."""


@attrs.frozen
class ClientProfile:
    """A profile sent to Klaviyo's client-side endpoint (``POST /client/profiles``).

    The one place a revision without ``anonymous_id`` on profile-import still takes it:
    ``identify`` links an anonymous visit to the known person through it (see
    ``_revisions.Revision.shape``). Sent with the public key only.
    """

    profile: Profile


KlaviyoObject: TypeAlias = "Event | Profile | ClientProfile | Subscription"
"""What a call can become: a profile import, an event, a client-side profile link, or a
consent change on a list."""


def with_backfill(objects: Sequence[KlaviyoObject], backfill: bool) -> Sequence[KlaviyoObject]:
    """Return a call's objects with each event marked as a backfill, when ``backfill``."""
    if not backfill:
        return objects
    return [attrs.evolve(obj, backfill=True) if type(obj) is Event else obj for obj in objects]
