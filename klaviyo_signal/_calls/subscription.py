"""Subscribe and unsubscribe calls, checked at the call (``_klaviyo/wire`` writes their jobs).

Marketing email and SMS in Klaviyo reach only profiles with recorded consent; these calls
record it (``POST /api/profile-subscription-bulk-create-jobs``) or revoke it
(``.../profile-subscription-bulk-delete-jobs``). Only the profile attributes Klaviyo accepts
on these endpoints are ever sent: email, phone_number and subscriptions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone

from .._errors import ValidationError
from .._klaviyo.json import check_str
from .._klaviyo.models import Action, Subscription
from .consent import consent_drop_reason, resolve_consent
from .identity import normalize_email, normalize_phone
from .message import message_id_of, parse_iso

__all__ = [
    "CHANNELS",
    "build_subscription",
    "implied_subscription",
]

CHANNELS = ("email", "sms", "sms_transactional")
_NEEDS = {"email": "email", "sms": "phone", "sms_transactional": "phone"}


def _channels(
    channels: Iterable[str] | None, *, email: str | None, phone: str | None
) -> tuple[str, ...]:
    if channels is None:
        chosen = [name for name, given in (("email", email), ("sms", phone)) if given]
        return tuple(chosen)
    if isinstance(channels, (str, bytes)):
        raise ValidationError(
            f"channels: pass an iterable of channel names such as ['email'], not the string "
            f"{channels!r}"
        )
    # A mapping would be read by its keys only ({'email': False} would subscribe email).
    if isinstance(channels, Mapping) or not isinstance(channels, Iterable):
        raise ValidationError(
            "channels: must be a list of channel names such as ['email', 'sms'], "
            f"got a value of type {type(channels).__name__}"
        )
    chosen = []
    for name in channels:
        if name not in CHANNELS:
            raise ValidationError(
                f"channels: unknown channel {name!r}; choose from {', '.join(CHANNELS)}"
            )
        needed = _NEEDS[name]
        if (email if needed == "email" else phone) is None:
            raise ValidationError(f"channels: {name!r} needs {needed}= to be given")
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise ValidationError("channels: must name at least one channel")
    return tuple(chosen)


def _text(value: object, path: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{path}: must be a non-empty string, got {value!r}")
    return check_str(value, path)  # a lone surrogate cannot be sent


def _consented_at(value: object, now: datetime) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = parse_iso(value, "consented_at")
    if not isinstance(value, datetime):
        raise ValidationError(
            f"consented_at: must be a datetime or an ISO 8601 str, got {type(value).__name__}"
        )
    when = value if value.utcoffset() is not None else value.replace(tzinfo=timezone.utc)
    try:
        when = when.astimezone(timezone.utc)
    except OverflowError:
        # Only the very ends of the calendar overflow when moved to UTC.
        raise ValidationError(
            f"consented_at: {value.isoformat()} cannot be written in UTC (it falls outside "
            "the years 1 to 9999 there); give the real date consent was given"
        ) from None
    if when > now:
        raise ValidationError(
            f"consented_at: {when.isoformat()} is in the future; it records when consent was "
            "given, for a historical import"
        )
    return when


def build_subscription(
    action: Action,
    *,
    email: object = None,
    phone: object = None,
    list_id: object = None,
    channels: Iterable[str] | None = None,
    custom_source: object = None,
    consented_at: object = None,
    consent: Mapping[str, object] | None = None,
    message_id: object = None,
    default_phone_region: str | None = None,
    now: datetime | None = None,
) -> Subscription:
    """Check a subscribe/unsubscribe call and return it as a value; raise ValidationError."""
    clean_email = normalize_email(email, "email") if email is not None else None
    clean_phone = (
        normalize_phone(phone, "phone", default_phone_region) if phone is not None else None
    )
    if clean_email is None and clean_phone is None:
        raise ValidationError(
            f"{action}: pass email= or phone=; Klaviyo {action}s a profile by its email "
            "address or E.164 phone number"
        )
    if action == "subscribe":
        reason = consent_drop_reason(resolve_consent(consent, {}), require_consent=False)
        if reason is not None:
            raise ValidationError(
                "consent: marketing consent is denied, so this profile cannot be subscribed "
                "to marketing; record the denial with unsubscribe() instead"
            )
    return Subscription(
        action=action,
        message_id=message_id_of(message_id),
        channels=_channels(channels, email=clean_email, phone=clean_phone),
        email=clean_email,
        phone_number=clean_phone,
        list_id=_text(list_id, "list_id"),
        custom_source=_text(custom_source, "custom_source"),
        consented_at=_consented_at(consented_at, now or datetime.now(timezone.utc)),
    )


def implied_subscription(
    *,
    email: str | None,
    phone_number: str | None,
    channels: Sequence[str],
    list_id: str | None,
    custom_source: str | None,
    message_id: str,
) -> Subscription | None:
    """Return a subscribe to those of ``channels`` the identifiers allow, or None if none.

    For a subscription implied by another call (a blueprint's identify), whose identifiers
    are already checked: a channel it has no identifier for is left out, not an error.
    """
    given = {"email": email, "phone": phone_number}
    usable = tuple(name for name in channels if given[_NEEDS[name]] is not None)
    if not usable:
        return None
    return Subscription(
        action="subscribe",
        message_id=message_id,
        channels=usable,
        email=email if "email" in usable else None,
        phone_number=phone_number if any(_NEEDS[name] == "phone" for name in usable) else None,
        list_id=list_id,
        custom_source=custom_source,
    )
