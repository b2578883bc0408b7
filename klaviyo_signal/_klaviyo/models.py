"""Klaviyo's objects as plain values: what the blueprint produces and the wire writes.

The models know nothing of JSON:API; ``_klaviyo/wire.py`` owns the ``data``/``attributes`` nesting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import TypeAlias

import attrs

from .._calls.identity import Identity
from .._calls.subscription import Subscription
from .json import JSON

_NO_PROPERTIES: Mapping[str, JSON] = MappingProxyType({})

__all__ = ["ClientProfile", "Event", "KlaviyoObject", "Location", "Profile", "with_backfill"]


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
