"""What FakeKlaviyo rejects, and the Klaviyo-shaped 400 records it answers with.

The request schemas are Klaviyo's own (copied into ``_schemas``), so a body the fake accepts
is one the real API accepts too. The checks the schemas cannot express (identifiers,
ingestion limits, the bulk-subscribe attribute allow-list) live here as well, so that every
rule that can turn a request into a 400 is in one place.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any, Protocol

from klaviyo_signal._klaviyo.revisions import (
    DEFAULT_REVISION,
    SUPPORTED_REVISIONS,
    Revision,
    revision,
)

__all__ = [
    "IDENTIFIERS",
    "JSON",
    "error_record",
    "event_limit_errors",
    "identifier_error",
    "pointer",
    "real_error_body",
    "schema_errors",
    "subscription_attribute_errors",
]

JSON = Any
"""A decoded JSON value; request bodies are open-ended by nature."""

IDENTIFIERS = ("email", "phone_number", "external_id", "anonymous_id", "_kx")
"""Profile attributes Klaviyo resolves a profile by (a profile ``id`` works too)."""

_SUBSCRIPTION_FIELDS = frozenset(
    {"email", "phone_number", "subscriptions", "age_gated_date_of_birth"}
)
_MAX_STRING_BYTES = 100 * 1024
_MAX_ARRAY_ITEMS = 4000
_MAX_NESTING = 10
_MAX_METRIC_NAME = 127  # "Must be less than 128 characters."


class _Validator(Protocol):
    def iter_errors(self, instance: JSON) -> Iterable[Any]: ...


def _load(name: str) -> JSON:
    text = (resources.files("klaviyo_signal") / "_klaviyo" / "schemas" / name).read_text("utf-8")
    return json.loads(text)


@functools.cache
def _validator(operation: str, revision_name: str) -> _Validator:
    # Imported here, not at module level: `import klaviyo_signal` must work without the
    # `testing` extra installed.
    try:
        from openapi_schema_validator import (  # noqa: PLC0415 - optional dependency
            OAS30Validator,
            oas30_format_checker,
        )
    except ImportError as exc:  # pragma: no cover - depends on the environment
        msg = (
            "FakeKlaviyo validates with openapi-schema-validator: "
            "pip install 'klaviyo-signal[testing]'"
        )
        raise ImportError(msg) from exc
    schema = revision(revision_name).schema(operation)
    validator: _Validator = OAS30Validator(schema, format_checker=oas30_format_checker)
    return validator


def require_validator() -> None:
    """Fail early, at FakeKlaviyo construction, when the ``testing`` extra is missing."""
    _validator("event_create", DEFAULT_REVISION)


def pointer(parts: Iterable[str | int]) -> str:
    """Render a JSON pointer (RFC 6901); the document root is rendered as ``/``."""
    escaped = [str(p).replace("~", "~0").replace("/", "~1") for p in parts]
    return "/" + "/".join(escaped)


def error_record(
    status: int,
    detail: str,
    *,
    code: str = "invalid",
    title: str = "Invalid input.",
    source_pointer: str | None = None,
    parameter: str | None = None,
) -> dict[str, JSON]:
    """Build one entry of Klaviyo's ``errors`` array, with a fresh ``id`` like the real API."""
    source: dict[str, str] = {}
    if source_pointer is not None:
        source["pointer"] = source_pointer
    if parameter is not None:
        source["parameter"] = parameter
    return {
        "id": str(uuid.uuid4()),
        "status": status,
        "code": code,
        "title": title,
        "detail": detail,
        "source": source,
        "meta": {},
    }


@functools.cache
def _real_bodies() -> dict[int, JSON]:
    examples = _load("errors.json")["examples"]
    return {ex["status"]: ex["body"] for ex in examples if ex["status"] in (401, 429)}


def real_error_body(status: int, detail: str | None = None) -> dict[str, JSON]:
    """Return Klaviyo's verbatim 401 or 429 body with a fresh ``id`` (and ``detail`` if given)."""
    body = json.loads(json.dumps(_real_bodies()[status]))
    body["errors"][0]["id"] = str(uuid.uuid4())
    if detail is not None:
        body["errors"][0]["detail"] = detail
    result: dict[str, JSON] = body
    return result


def schema_revision(operation: str, under: Revision) -> Revision:
    """Return the revision whose schema of ``operation`` the fake applies under ``under``.

    Its own; or, when the package ships none for it (bulk profile import in 2025-*, where
    Klaviyo has the endpoint), the newest earlier revision that ships one, whose body a
    later revision keeps accepting (the same field list until 2025-10-15).
    """
    if under.has(operation):
        return under
    earlier = [r for r in SUPPORTED_REVISIONS if r < under.name and revision(r).has(operation)]
    return revision(earlier[-1]) if earlier else under


def schema_errors(operation: str, body: JSON, under: Revision) -> list[dict[str, JSON]]:
    """Validate ``body`` against the operation's request schema under revision ``under``;
    one record per error found."""
    validator = _validator(operation, schema_revision(operation, under).name)
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    return [error_record(400, e.message, source_pointer=pointer(e.absolute_path)) for e in errors]


def identifier_error(at: Sequence[str | int]) -> dict[str, JSON]:
    """The record Klaviyo sends when a profile names none of its identifiers."""
    return error_record(400, "One or more identifiers is required", source_pointer=pointer(at))


def has_identifier(profile_data: Mapping[str, JSON]) -> bool:
    """Tell whether a JSON:API profile object names at least one identifier or an ``id``."""
    attributes = profile_data.get("attributes") or {}
    return bool(profile_data.get("id")) or any(attributes.get(k) for k in IDENTIFIERS)


def event_limit_errors(
    attributes: Mapping[str, JSON], at: Sequence[str | int], now: dt.datetime, under: Revision
) -> list[dict[str, JSON]]:
    """Check Klaviyo's documented ingestion limits, as of revision ``under``, on one event's
    ``attributes``."""
    errors: list[dict[str, JSON]] = []
    name = attributes["metric"]["data"]["attributes"]["name"]
    if len(name) > _MAX_METRIC_NAME:
        where = [*at, "metric", "data", "attributes", "name"]
        errors.append(_limit(where, "The metric name must be less than 128 characters."))
    properties = attributes["properties"]
    if len(properties) > under.max_event_properties:
        detail = f"Events cannot have more than {under.max_event_properties} properties."
        errors.append(_limit([*at, "properties"], detail))
    errors.extend(_walk_limits(properties, [*at, "properties"], 0))
    time = attributes.get("time")
    earliest = under.earliest_event_time
    if time is not None and not earliest <= _parse_time(time) <= _one_year_after(now):
        detail = (
            f"The event time must be after the year {earliest.year} and at most 1 year in "
            "the future."
        )
        errors.append(_limit([*at, "time"], detail))
    return errors


def _walk_limits(value: JSON, at: list[str | int], depth: int) -> list[dict[str, JSON]]:
    # `depth` counts containers below the properties object itself: its direct values that
    # are objects or arrays sit at level 1.
    if isinstance(value, str) and len(value.encode("utf-8")) > _MAX_STRING_BYTES:
        return [_limit(at, "A single string cannot be larger than 100 KB.")]
    if not isinstance(value, (dict, list)):
        return []
    if depth > _MAX_NESTING:
        return [_limit(at, f"Properties cannot contain more than {_MAX_NESTING} nested levels.")]
    errors: list[dict[str, JSON]] = []
    if isinstance(value, list) and len(value) > _MAX_ARRAY_ITEMS:
        errors.append(_limit(at, f"Arrays cannot have more than {_MAX_ARRAY_ITEMS} elements."))
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        errors.extend(_walk_limits(item, [*at, key], depth + 1))
    return errors


def _limit(at: Sequence[str | int], detail: str) -> dict[str, JSON]:
    return error_record(400, detail, source_pointer=pointer(at))


def _parse_time(text: str) -> dt.datetime:
    # The schema's date-time format check already passed; Python 3.10 cannot read "Z".
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _one_year_after(now: dt.datetime) -> dt.datetime:
    return now + dt.timedelta(days=366)


def subscription_attribute_errors(profiles: Sequence[JSON]) -> list[dict[str, JSON]]:
    """Reject profile attributes the bulk-subscribe endpoints do not accept, as Klaviyo does."""
    errors: list[dict[str, JSON]] = []
    for index, profile in enumerate(profiles):
        at: list[str | int] = ["data", "attributes", "profiles", "data", index, "attributes"]
        for name in profile.get("attributes") or {}:
            if name not in _SUBSCRIPTION_FIELDS:
                detail = f"'{name}' is not a valid field for the resource 'profile'."
                errors.append(error_record(400, detail, source_pointer=pointer([*at, name])))
        errors.extend(_channel_errors(profile, at))
    return errors


def _channel_errors(profile: Mapping[str, JSON], at: list[str | int]) -> list[dict[str, JSON]]:
    attributes = profile.get("attributes") or {}
    subscriptions = attributes.get("subscriptions") or {}
    errors: list[dict[str, JSON]] = []
    for channel, field in (("sms", "phone_number"), ("email", "email")):
        if subscriptions.get(channel) and not attributes.get(field):
            detail = (
                f"'{field}' must not be empty when the {channel} channel is included in "
                "'subscriptions'."
            )
            errors.append(error_record(400, detail, source_pointer=pointer([*at, field])))
    if not errors and not has_identifier(profile):
        errors.append(identifier_error(at[:-1]))
    return errors


def unknown_field_errors(
    operation: str, attributes: Mapping[str, JSON], at: Sequence[str | int], under: Revision
) -> list[dict[str, JSON]]:
    """Refuse profile attributes the revision's schema does not declare, as Klaviyo does.

    Klaviyo's schemas leave ``additionalProperties`` open, but its API answers 400 to a
    field it does not know (``anonymous_id`` on profile-import since 2025-10-15).
    """
    declared = under.schema(operation)["properties"]["data"]["properties"]["attributes"]
    known = declared["properties"]
    return [
        error_record(
            400,
            f"'{name}' is not a valid field for the resource 'profile'.",
            source_pointer=pointer([*at, name]),
        )
        for name in attributes
        if name not in known
    ]


# Django's EmailValidator (Klaviyo's API answers like Django REST Framework): a dot-atom
# local part and a domain of letter-digit-hyphen labels with a top-level domain of at least
# two letters. Stricter than the SDK's own check, so an address can pass the call and still
# be refused by Klaviyo, as in production.
_EMAIL_USER = re.compile(r"^[-!#$%&'*+/=?^_`{}|~0-9A-Z]+(\.[-!#$%&'*+/=?^_`{}|~0-9A-Z]+)*$", re.I)
_EMAIL_DOMAIN = re.compile(
    r"^((?:[A-Z0-9](?:[A-Z0-9-]{0,61}[A-Z0-9])?\.)+)(?:[A-Z]{2,63}|xn--[A-Z0-9]{1,59})$", re.I
)
# The shortest numbers in use are 8 digits with the country code (E.164 allows fewer).
_MIN_PHONE_DIGITS = 8


def profile_value_errors(attributes: Mapping[str, JSON]) -> list[tuple[str, str]]:
    """Return (field, detail) for each identifier value Klaviyo would refuse on a profile."""
    errors: list[tuple[str, str]] = []
    email = attributes.get("email")
    if isinstance(email, str) and email:
        user, _, domain = email.rpartition("@")
        if not (user and _EMAIL_USER.match(user) and _EMAIL_DOMAIN.match(domain)):
            errors.append(("email", f"Invalid email address: '{email}'"))
    phone = attributes.get("phone_number")
    if isinstance(phone, str) and phone and sum(c.isdigit() for c in phone) < _MIN_PHONE_DIGITS:
        errors.append(
            (
                "phone_number",
                f"Invalid phone number format (Example of a valid format: +12345678901): '{phone}'",
            )
        )
    return errors
