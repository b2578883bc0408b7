"""The cookie readers the middlewares use for consent and the anonymous id."""

from __future__ import annotations

import pytest

from klaviyo_signal.integrations.cookies import (
    cookiebot,
    json_consent,
    onetrust,
    onetrust_with,
    segment_anonymous_id,
)

COOKIEBOT = (
    "{stamp:%27-1%27%2Cnecessary:true%2Cpreferences:false%2Cstatistics:true%2Cmarketing:false"
    "%2Cmethod:%27explicit%27%2Cver:1%2Cutc:1700000000000%2Cregion:%27de%27}"
)
ONETRUST = (
    "isGpcEnabled=0&datestamp=Mon+Dec+01+2026&version=202401.1.0&consentId=abc"
    "&interactionCount=1&groups=C0001%3A1%2CC0002%3A0%2CC0003%3A1%2CC0004%3A1%2CC0008%3A0"
)


def test_cookiebot_reads_its_four_categories() -> None:
    """Cookiebot's URL-encoded object gives its categories as the visitor chose them."""
    assert cookiebot(COOKIEBOT) == {
        "necessary": True,
        "preferences": False,
        "statistics": True,
        "marketing": False,
    }


def test_onetrust_maps_its_groups_to_categories() -> None:
    """OneTrust's groups become categories; C0004 (targeting) is marketing; unknown keep ids."""
    assert onetrust(ONETRUST) == {
        "necessary": True,
        "analytics": False,
        "functional": True,
        "marketing": True,
        "C0008": False,
    }
    assert onetrust_with({"C0008": "marketing"})(ONETRUST) == {
        "C0001": True,
        "C0002": False,
        "C0003": True,
        "C0004": True,
        "marketing": False,
    }


@pytest.mark.parametrize("value", ["", "-1", "garbage", "{}", "%7B", "x" * 10_000])
def test_readers_give_none_for_what_they_do_not_understand(value: str) -> None:
    """No reader raises on a value a visitor sent; they say None instead."""
    assert cookiebot(value) is None
    assert onetrust(value) is None
    assert json_consent(value) is None


def test_json_consent_keeps_only_booleans() -> None:
    """A JSON object cookie gives its true/false entries."""
    assert json_consent("%7B%22marketing%22%3A%20true%2C%20%22v%22%3A%201%7D") == {
        "marketing": True
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [("anon-1", "anon-1"), ("%22anon-1%22", "anon-1"), ('"anon-1"', "anon-1"), ("%22%22", None)],
)
def test_segment_anonymous_id_unquotes(value: str, expected: str | None) -> None:
    """analytics.js's URL-encoded, JSON-quoted id is read as the bare id."""
    assert segment_anonymous_id(value) == expected
