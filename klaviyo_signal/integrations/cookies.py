"""Readers for the cookies apps keep identity and consent in, for the middlewares.

A consent reader takes the cookie's raw value and returns consent by category
(``{"marketing": False, ...}``), or None when the value says nothing it understands; it never
raises on a value a visitor sent. Klaviyo is in the ``marketing`` category (docs/consent.md).

- ``cookiebot``: Cookiebot's ``CookieConsent`` cookie (its own categories ``necessary``,
  ``preferences``, ``statistics``, ``marketing``).
- ``onetrust``: OneTrust's ``OptanonConsent`` cookie; its ``groups`` field maps through
  ``ONETRUST_GROUPS`` (``C0004``, targeting, is ``marketing``); ``onetrust_with(groups)`` for
  an account whose group ids differ.
- ``json_consent``: a cookie holding a JSON object of category -> true/false (your own banner).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from urllib.parse import parse_qs, unquote

__all__ = [
    "DEFAULT_CONSENT_COOKIES",
    "ONETRUST_GROUPS",
    "ConsentReader",
    "cookiebot",
    "json_consent",
    "onetrust",
    "onetrust_with",
    "segment_anonymous_id",
]

ConsentReader = Callable[[str], "Mapping[str, bool] | None"]
"""Reads a consent cookie's raw value into consent by category, or None."""

_COOKIEBOT = re.compile(r"\b(necessary|preferences|statistics|marketing)\s*:\s*(true|false)\b")
# A Cookiebot value is small; anything far longer is not one (and not worth scanning).
_MAX_COOKIE = 4096

#: OneTrust's default category ids, and the consent categories they stand for.
ONETRUST_GROUPS: Mapping[str, str] = MappingProxyType(
    {
        "C0001": "necessary",
        "C0002": "analytics",
        "C0003": "functional",
        "C0004": "marketing",
        "C0005": "social",
    }
)


def cookiebot(value: str) -> Mapping[str, bool] | None:
    """Read Cookiebot's ``CookieConsent`` cookie.

    Its value (URL-encoded) looks like ``{stamp:'...',necessary:true,preferences:false,
    statistics:true,marketing:false,...}``. ``-1`` (a visitor where no consent is required)
    and values without categories give None.
    """
    text = unquote(value[:_MAX_COOKIE])
    found = {name: flag == "true" for name, flag in _COOKIEBOT.findall(text)}
    return found or None


def onetrust_with(groups: Mapping[str, str]) -> ConsentReader:
    """Return a reader of OneTrust's ``OptanonConsent`` cookie with your group ids.

    Args:
        groups: OneTrust group id -> consent category, e.g. ``{"C0004": "marketing"}``;
            groups not listed keep their id as the category name.
    """
    names = dict(groups)

    def read(value: str) -> Mapping[str, bool] | None:
        fields = parse_qs(value[:_MAX_COOKIE])
        out: dict[str, bool] = {}
        for group in ",".join(fields.get("groups", ())).split(","):
            key, sep, flag = group.partition(":")
            key = key.strip()
            if sep and key and flag in ("0", "1"):
                out[names.get(key, key)] = flag == "1"
        return out or None

    return read


onetrust: ConsentReader = onetrust_with(ONETRUST_GROUPS)
"""Read OneTrust's ``OptanonConsent`` cookie with OneTrust's default group ids."""


def json_consent(value: str) -> Mapping[str, bool] | None:
    """Read a cookie holding a (URL-encoded) JSON object of category -> true/false."""
    try:
        data = json.loads(unquote(value[:_MAX_COOKIE]))
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    out = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, bool)}
    return out or None


def segment_anonymous_id(value: str) -> str | None:
    """Read Segment's ``ajs_anonymous_id`` cookie: analytics.js writes it URL-encoded and
    sometimes JSON-quoted (``%22abc%22``); an empty value gives None."""
    text = unquote(value).strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    return text or None


#: The consent cookies the middlewares read by default, first found wins.
DEFAULT_CONSENT_COOKIES: Mapping[str, ConsentReader] = MappingProxyType(
    {"CookieConsent": cookiebot, "OptanonConsent": onetrust}
)
