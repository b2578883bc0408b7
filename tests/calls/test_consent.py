"""Tests for klaviyo_signal._calls.consent: merging consent sources and the marketing gate."""

from __future__ import annotations

from typing import Any

import pytest

from klaviyo_signal._calls.consent import MARKETING, consent_drop_reason, resolve_consent
from klaviyo_signal._errors import ValidationError

DENIED = "consent: marketing denied; Klaviyo is in the marketing category, so nothing was sent"
NOT_GRANTED = "consent: no marketing grant and require_consent=True; nothing was sent"


def segment_context(preferences: Any) -> dict[str, Any]:
    """Return a Segment context carrying consent-manager category preferences."""
    return {"consent": {"categoryPreferences": preferences}}


def test_marketing_constant() -> None:
    """The category Klaviyo belongs to is called 'marketing'."""
    assert MARKETING == "marketing"


def test_no_consent_anywhere_is_empty() -> None:
    """Without consent= or context consent, the result is empty."""
    assert resolve_consent(None, {}) == {}
    assert resolve_consent(None, {"consent": {}}) == {}


def test_explicit_consent_is_copied() -> None:
    """An explicit consent mapping is returned as given."""
    assert resolve_consent({"Marketing": True, "analytics": False}, {}) == {
        "Marketing": True,
        "analytics": False,
    }


def test_context_category_preferences_are_read() -> None:
    """With consent=None, Segment's context.consent.categoryPreferences is used."""
    assert resolve_consent(None, segment_context({"Marketing": False})) == {"Marketing": False}


def test_explicit_consent_wins_per_category() -> None:
    """Explicit consent overrides the context category by category, ignoring case."""
    context = segment_context({"Marketing": False, "Analytics": True})
    assert resolve_consent({"marketing": True}, context) == {"Analytics": True, "marketing": True}


def test_non_bool_value_names_the_category() -> None:
    """A consent value that is not a bool fails, naming the category and the value."""
    with pytest.raises(ValidationError) as info:
        resolve_consent({"marketing": "yes"}, {})
    assert str(info.value) == "consent['marketing']: must be True or False, got 'yes'"


def test_truthy_int_is_not_a_bool() -> None:
    """1 and 0 are not accepted in place of True and False."""
    with pytest.raises(ValidationError, match=r"^consent\['marketing'\]: must be True or False"):
        resolve_consent({"marketing": 1}, {})


def test_bad_context_value_names_the_context_path() -> None:
    """A bad value in the context is reported under its context path."""
    with pytest.raises(
        ValidationError,
        match=r"^context\.consent\.categoryPreferences\['Marketing'\]: must be True or False",
    ):
        resolve_consent(None, segment_context({"Marketing": "granted"}))


@pytest.mark.parametrize(
    ("consent", "context", "pattern"),
    [
        (["marketing"], {}, r"^consent: must be a mapping .* type list"),
        ({1: True}, {}, r"^consent: category names must be strings, got 1"),
        (None, {"consent": "yes"}, r"^context\.consent: must be an object"),
        (None, segment_context(["marketing"]), r"^context\.consent\.categoryPreferences: must"),
    ],
)
def test_malformed_sources_are_rejected(consent: Any, context: Any, pattern: str) -> None:
    """Consent sources that are not category -> bool mappings fail with their path."""
    with pytest.raises(ValidationError, match=pattern):
        resolve_consent(consent, context)


def test_contradicting_spellings_are_rejected() -> None:
    """One source naming a category twice with different values fails instead of guessing."""
    with pytest.raises(ValidationError, match=r"'Marketing' and 'marketing' name the same"):
        resolve_consent({"Marketing": True, "marketing": False}, {})
    assert resolve_consent({"Marketing": True, "marketing": True}, {}) == {
        "Marketing": True,
        "marketing": True,
    }


@pytest.mark.parametrize("key", ["marketing", "Marketing", "MARKETING"])
def test_marketing_denied_drops(key: str) -> None:
    """Marketing explicitly denied, in any case, stops the call."""
    assert consent_drop_reason({key: False}, require_consent=False) == DENIED
    assert consent_drop_reason({key: False}, require_consent=True) == DENIED


def test_require_consent_needs_a_marketing_grant() -> None:
    """With require_consent, a call without a marketing grant is stopped."""
    assert consent_drop_reason({}, require_consent=True) == NOT_GRANTED
    assert consent_drop_reason({"analytics": True}, require_consent=True) == NOT_GRANTED
    assert consent_drop_reason({"Marketing": True}, require_consent=True) is None


def test_opt_out_default_sends_without_consent() -> None:
    """Without require_consent, only an explicit denial stops a call."""
    assert consent_drop_reason({}, require_consent=False) is None
    assert consent_drop_reason({"analytics": False}, require_consent=False) is None
