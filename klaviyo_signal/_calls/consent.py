"""The consent gate: whether the caller's consent state lets a call reach Klaviyo.

Klaviyo is a marketing tool, so the one category that decides is ``marketing``. Consent comes
from the call's ``consent=`` argument and from Segment's
``context.consent.categoryPreferences`` (what Segment's consent manager integration sets).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from .._errors import ValidationError
from .._klaviyo.json import JSON, check_key

__all__ = ["MARKETING", "NO_CONSENT", "consent_drop_reason", "resolve_consent"]

MARKETING = "marketing"
_CONTEXT_PATH = "context.consent.categoryPreferences"
NO_CONSENT: Mapping[str, bool] = MappingProxyType({})
_DENIED = "consent: marketing denied; Klaviyo is in the marketing category, so nothing was sent"
_NOT_GRANTED = "consent: no marketing grant and require_consent=True; nothing was sent"


def _categories(value: object, path: str) -> dict[str, bool]:
    """Return a checked copy of one source's category -> bool mapping."""
    if not isinstance(value, Mapping):
        raise ValidationError(
            f"{path}: must be a mapping of category name to True or False, "
            f"got a value of type {type(value).__name__}"
        )
    out: dict[str, bool] = {}
    seen: dict[str, str] = {}
    for key, granted in value.items():
        if not isinstance(key, str):
            raise ValidationError(f"{path}: category names must be strings, got {key!r}")
        key = check_key(key, path)  # noqa: PLW2901 - sent as the event's consent property
        if not isinstance(granted, bool):
            raise ValidationError(f"{path}[{key!r}]: must be True or False, got {granted!r}")
        other = seen.setdefault(key.casefold(), key)
        if other != key and out[other] != granted:
            raise ValidationError(
                f"{path}: {other!r} and {key!r} name the same category (case is ignored) "
                "with different values; pass one of them"
            )
        out[key] = granted
    return out


def _from_context(context: Mapping[str, JSON]) -> dict[str, bool]:
    consent = context.get("consent")
    if consent is None:
        return {}
    if not isinstance(consent, Mapping):
        raise ValidationError(
            "context.consent: must be an object with categoryPreferences, "
            f"got a value of type {type(consent).__name__}"
        )
    preferences = consent.get("categoryPreferences")
    if preferences is None:
        return {}
    return _categories(preferences, _CONTEXT_PATH)


def resolve_consent(
    consent: Mapping[str, object] | None, context: Mapping[str, JSON]
) -> Mapping[str, bool]:
    """Return the call's consent by category, merging ``consent=`` over the context's.

    The explicit ``consent`` wins category by category, with category names compared
    case-insensitively (an explicit ``marketing`` replaces the context's ``Marketing``). Keys
    keep the spelling the caller gave.

    Raises:
        ValidationError: a source is not a mapping, a category name is not a str, a value is
            not a bool, or one source gives one category two different values.
    """
    if consent is None and not context:
        return NO_CONSENT  # the common call: no consent anywhere
    merged = _from_context(context)
    if consent is None:
        # Most calls carry no consent: share one read-only empty mapping rather than keep
        # an empty dict alive per queued event.
        return merged or NO_CONSENT
    explicit = _categories(consent, "consent")
    if merged:
        overridden = {key.casefold() for key in explicit}
        merged = {k: v for k, v in merged.items() if k.casefold() not in overridden}
    merged.update(explicit)
    return merged


def consent_drop_reason(consent: Mapping[str, bool], *, require_consent: bool) -> str | None:
    """Return why a call must not be sent to Klaviyo, or None when it may be.

    Args:
        consent: The call's consent, as ``resolve_consent`` returns it.
        require_consent: Whether a marketing grant is needed (opt-in), rather than only
            an explicit denial stopping the call (opt-out).
    """
    granted = False
    for category, value in consent.items():
        if category.casefold() == MARKETING:
            if not value:
                return _DENIED
            granted = True
    if require_consent and not granted:
        return _NOT_GRANTED
    return None
