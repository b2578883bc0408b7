"""Klaviyo's API revisions as data: what each one this package supports allows.

Klaviyo versions its API by date. A revision is stable for a year, deprecated in its
second year, and retired two years after its release; a retired revision is then served as
the oldest one still supported ("fall-forward"), unless the request opts out with
``X-Klaviyo-Revision-Fall-Forward-Opt-Out: 1`` and gets 410 instead. The rules a body must
follow differ between revisions, so every rule that does lives in ``Revision`` below, and
the request schemas of each revision ship in ``_schemas/<revision>/``; the code asks a
``Revision`` what it allows instead of comparing dates.

Only revisions whose every request the SDK sends has an official schema here are
supported: 2025-10-15 to 2026-04-15 dropped ``anonymous_id`` from profile-import, and this
package holds no schema of their client-side profile endpoint, which ``identify`` then
uses to stitch an anonymous visit.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timezone
from importlib import resources
from importlib.abc import Traversable
from typing import Any

import attrs

from .._errors import ConfigurationError, ValidationError, shown
from .models import ClientProfile, KlaviyoObject, Profile

__all__ = [
    "DEFAULT_REVISION",
    "FALL_FORWARD_OPT_OUT",
    "POLL_OPERATIONS",
    "PROFILE_JOBS_OPERATION",
    "SUPPORTED_REVISIONS",
    "Revision",
    "Status",
    "call_backfill",
    "check_backfill",
    "no_backfill",
    "revision",
]

FALL_FORWARD_OPT_OUT = "X-Klaviyo-Revision-Fall-Forward-Opt-Out"
"""The request header that makes Klaviyo answer 410 to a retired revision."""

# The operations whose request schema each supported revision ships, by endpoint.
OPERATIONS: Mapping[str, str] = {
    "POST /api/events": "event_create",
    "POST /api/event-bulk-create-jobs": "event_bulk_create_job",
    "POST /api/profile-import": "profile_import",
    "POST /api/profile-subscription-bulk-create-jobs": "subscription_bulk_create_job",
    "POST /api/profile-subscription-bulk-delete-jobs": "subscription_bulk_delete_job",
    "POST /client/profiles": "client_profile_create",
    "POST /api/profile-bulk-import-jobs": "profile_bulk_import_job",
}

PROFILE_JOBS_OPERATION = "profile_bulk_import_job"
"""Background identifies go through bulk profile import only where its schema ships here
(2024-10-15 and 2026-07-15; the 2025 revisions keep ``POST /api/profile-import``)."""

# The operations a background identify polls its bulk import job with, by endpoint; their
# limits are in ``<operation>.get_operations.json`` beside the job's request schema.
POLL_OPERATIONS: Mapping[str, str] = {
    "GET /api/profile-bulk-import-jobs/{id}": "/api/profile-bulk-import-jobs/{job_id}",
    "GET /api/profile-bulk-import-jobs/{id}/import-errors": (
        "/api/profile-bulk-import-jobs/{id}/import-errors"
    ),
}


@attrs.frozen
class Status:
    """Where a revision stands in Klaviyo's lifecycle on a given day."""

    state: str
    """``"stable"``, ``"deprecated"`` or ``"retired"``."""
    since: date | None
    """When it became deprecated or retired; None while stable."""
    served_as: str
    """The revision Klaviyo actually applies (itself unless retired)."""

    def describe(self, name: str) -> str:
        """Return one sentence on this status, with what to do about it."""
        if self.state == "stable":
            return f"revision {name} is stable"
        if self.state == "deprecated":
            return (
                f"revision {name} is deprecated since {self.since} and Klaviyo retires it on "
                f"{_retires(name)}; pass revision={DEFAULT_REVISION!r} (the newest this "
                "package supports) to keep its rules"
            )
        return (
            f"revision {name} was retired by Klaviyo on {self.since}: Klaviyo serves its "
            f"requests as revision {self.served_as}, with that revision's rules (or answers "
            f"410 with strict_revision=True); pass revision={DEFAULT_REVISION!r}"
        )


@attrs.frozen
class Revision:
    """One Klaviyo API revision: its release date and the body rules that differ.

    Each fact is read off that revision's official schemas (``tests/klaviyo/test_revisions.py``
    checks them against the copies shipped in ``_schemas/``).
    """

    name: str
    released: date
    profile_import_anonymous_id: bool
    """Whether ``POST /api/profile-import`` takes ``anonymous_id``; if not, ``identify``
    links it through ``POST /client/profiles`` (the client-side endpoint)."""
    backfill: bool
    """Whether events take ``backfill`` (recorded without triggering flows)."""
    subscriptions_required: bool
    """Whether each profile of a subscription job must carry ``subscriptions``."""
    unique_id_repeat_fails_job: bool
    """Whether a bulk event job with one ``unique_id`` twice for a profile and metric fails
    whole (before, only the first was recorded)."""
    max_event_properties: int
    earliest_event_year: int
    """An event's time must be after 1 January of this year."""

    @property
    def earliest_event_time(self) -> datetime:
        """The earliest event time Klaviyo accepts under this revision."""
        return datetime(self.earliest_event_year, 1, 1, tzinfo=timezone.utc)

    def status(self, today: date | None = None) -> Status:
        """Return where this revision stands on ``today`` (default: the local date)."""
        today = date.today() if today is None else today
        deprecated = _shift(self.released, 1)
        retired = _shift(self.released, 2)
        if today >= retired:
            return Status("retired", retired, _oldest_supported(today))
        if today >= deprecated:
            return Status("deprecated", deprecated, self.name)
        return Status("stable", None, self.name)

    def shape(self, objects: Sequence[KlaviyoObject]) -> Sequence[KlaviyoObject]:
        """Return a call's objects as this revision takes them.

        Where profile-import takes no ``anonymous_id``, a profile that carries one is linked
        through the client-side endpoint first, with its other identifiers and nothing
        else (so the anonymous visit joins the known person, and the endpoint, which may
        not change an identifier a profile already has, has none to change), then imported
        without it; a profile known only by its anonymous id goes there whole. Events keep
        it: every revision takes ``anonymous_id`` on an event's profile.
        """
        if self.profile_import_anonymous_id:
            return objects
        out: list[KlaviyoObject] = []
        for obj in objects:
            if type(obj) is not Profile or obj.identity.anonymous_id is None:
                out.append(obj)
                continue
            identity = obj.identity
            if (
                identity.email is None
                and identity.phone_number is None
                and not identity.external_id
            ):
                out.append(ClientProfile(obj))
                continue
            out.append(ClientProfile(Profile(identity=identity)))
            out.append(attrs.evolve(obj, identity=attrs.evolve(identity, anonymous_id=None)))
        return out

    def has(self, operation: str) -> bool:
        """Whether the official schema of ``operation`` under this revision ships here."""
        return _path(self.name, operation).is_file()

    def schema(self, operation: str) -> Mapping[str, Any]:
        """Return the official request schema (``$ref`` inlined) of ``operation``."""
        return _document(self.name, operation)["schema"]  # type: ignore[no-any-return]

    def limits(self) -> dict[str, tuple[int, int]]:
        """Return the published (burst per second, steady per minute) limit per endpoint."""
        out: dict[str, tuple[int, int]] = {}
        for endpoint, operation in OPERATIONS.items():
            if not self.has(operation):
                continue
            limit = _document(self.name, operation)["operation"]["x-klaviyo-ratelimit"]
            out[endpoint] = (_per(limit["burst"]), _per(limit["steady"]))
        if self.has(PROFILE_JOBS_OPERATION):
            polls = self.poll_operations()
            for endpoint, path in POLL_OPERATIONS.items():
                limit = polls[path]["x-klaviyo-ratelimit"]
                out[endpoint] = (_per(limit["burst"]), _per(limit["steady"]))
        return out

    def poll_operations(self) -> Mapping[str, Mapping[str, Any]]:
        """Return the GET operations that poll a bulk profile import job, by spec path.

        Raises:
            KeyError: This revision ships no bulk profile import schema.
        """
        if not self.has(PROFILE_JOBS_OPERATION):
            raise KeyError(f"revision {self.name} has no {PROFILE_JOBS_OPERATION} operations")
        return _polls(self.name)


def _per(text: str) -> int:
    return int(text.split("/", maxsplit=1)[0])


def _shift(day: date, years: int) -> date:
    return day.replace(year=day.year + years)


def _retires(name: str) -> date:
    return _shift(_REVISIONS[name].released, 2)


def _oldest_supported(today: date) -> str:
    """The oldest revision Klaviyo still supports on ``today``: what a retired one is served as.

    Klaviyo releases a revision every quarter; the ones this package has no schemas for
    (between 2025-07-15 and 2026-07-15) count too.
    """
    candidates = sorted({*_REVISIONS, *_UNSUPPORTED})
    for name in candidates:
        if today < _shift(date.fromisoformat(name), 2):
            return name
    return candidates[-1]


@functools.cache
def _document(name: str, operation: str) -> Mapping[str, Any]:
    if name not in _REVISIONS:
        raise ConfigurationError(_unsupported(name))
    found: Mapping[str, Any] = json.loads(_path(name, operation).read_text("utf-8"))
    return found


@functools.cache
def _polls(name: str) -> Mapping[str, Mapping[str, Any]]:
    folder = resources.files("klaviyo_signal") / "_klaviyo" / "schemas" / name
    text = (folder / f"{PROFILE_JOBS_OPERATION}.get_operations.json").read_text("utf-8")
    found: Mapping[str, Mapping[str, Any]] = json.loads(text)["operations"]
    return found


def _path(name: str, operation: str) -> Traversable:
    return (
        resources.files("klaviyo_signal")
        / "_klaviyo"
        / "schemas"
        / name
        / f"{operation}.schema.json"
    )


def _revision(
    name: str, *, anonymous: bool, backfill: bool, required: bool, properties: int, year: int
) -> Revision:
    return Revision(
        name=name,
        released=date.fromisoformat(name),
        profile_import_anonymous_id=anonymous,
        backfill=backfill,
        subscriptions_required=required,
        # Every revision whose subscription jobs require `subscriptions` also fails a bulk
        # event job on a repeated unique_id: both came with 2025-01-15.
        unique_id_repeat_fails_job=required,
        max_event_properties=properties,
        earliest_event_year=year,
    )


_REVISIONS: Mapping[str, Revision] = {
    r.name: r
    for r in (
        _revision(
            "2024-10-15", anonymous=True, backfill=False, required=False, properties=300, year=2000
        ),
        _revision(
            "2025-01-15", anonymous=True, backfill=False, required=True, properties=300, year=2000
        ),
        _revision(
            "2025-04-15", anonymous=True, backfill=False, required=True, properties=400, year=2000
        ),
        _revision(
            "2025-07-15", anonymous=True, backfill=False, required=True, properties=400, year=2000
        ),
        _revision(
            "2026-07-15", anonymous=False, backfill=True, required=True, properties=400, year=1990
        ),
    )
}
# Released by Klaviyo, known here only by name (see the module docstring).
_UNSUPPORTED = ("2025-10-15", "2026-01-15", "2026-04-15")

DEFAULT_REVISION = "2026-07-15"
"""The revision a Client sends unless told otherwise: the newest this package supports."""

SUPPORTED_REVISIONS: tuple[str, ...] = tuple(sorted(_REVISIONS))
"""Every revision this package has Klaviyo's schemas for, oldest first."""


def _unsupported(name: object) -> str:
    return (
        f"revision: {shown(name)} is not a Klaviyo API revision this package supports; pass one of "
        f"{', '.join(SUPPORTED_REVISIONS)} (default {DEFAULT_REVISION})"
    )


def revision(name: object) -> Revision:
    """Return the supported revision called ``name``.

    Raises:
        ConfigurationError: The package has no schemas for it (the message lists those
            it has).
    """
    found = _REVISIONS.get(name) if isinstance(name, str) else None
    if found is None:
        raise ConfigurationError(_unsupported(name))
    return found


def check_backfill(value: object, under: Revision) -> bool:
    """Return a call's ``backfill=`` argument as a bool, checked against ``under``.

    Raises:
        ValidationError: It is not a bool, or True under a revision without the flag.
    """
    if not isinstance(value, bool):
        raise ValidationError(f"backfill: must be True or False, got {type(value).__name__}")
    if value and not under.backfill:
        raise ValidationError(no_backfill(under.name))
    return value


def call_backfill(value: object, default: bool, under: Revision) -> bool:
    """Return a call's backfill flag: its own ``backfill=``, checked, or ``default`` (the
    Client's) when it passed None.

    Raises:
        ValidationError: As ``check_backfill``.
    """
    return default if value is None else check_backfill(value, under)


def no_backfill(name: str) -> str:
    """Say that revision ``name`` cannot send a backfill, and what to pass instead."""
    return (
        f"backfill: revision {name} has no backfill flag on events (it came with 2026-04-15), "
        f"so Klaviyo would run flows for them; pass revision={DEFAULT_REVISION!r} to the "
        "Client to send flow-safe backfills"
    )
