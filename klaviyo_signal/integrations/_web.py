"""What the web middlewares share: reading a request's cookies into a request context."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .._calls.context import RequestContext, make_context
from .._errors import ConfigurationError, ValidationError
from .cookies import DEFAULT_CONSENT_COOKIES, ConsentReader, segment_anonymous_id

__all__ = ["ANONYMOUS_ID_COOKIE", "Cookies", "user_identity"]

log = logging.getLogger("klaviyo_signal")

#: The anonymous-id cookie read by default: the one Segment's analytics.js sets.
ANONYMOUS_ID_COOKIE = "ajs_anonymous_id"
_EMPTY = RequestContext()


@attrs.frozen
class Cookies:
    """Which cookies hold the visitor's anonymous id and consent, and how to read them."""

    anonymous_id: str | None = ANONYMOUS_ID_COOKIE
    """The anonymous-id cookie's name; None: none is read."""
    read_anonymous_id: Callable[[str], str | None] = segment_anonymous_id
    consent: Mapping[str, ConsentReader] = DEFAULT_CONSENT_COOKIES
    """Consent cookie name -> reader; the first cookie present that a reader understands wins."""

    @classmethod
    def checked(
        cls,
        anonymous_id: object,
        read_anonymous_id: object,
        consent: object,
        where: str,
    ) -> Cookies:
        """Return the settings, or raise ConfigurationError naming the wrong one."""
        if anonymous_id is not None and (not isinstance(anonymous_id, str) or not anonymous_id):
            raise ConfigurationError(
                f"{where} anonymous-id cookie: must be a cookie name or None, got {anonymous_id!r}"
            )
        if not callable(read_anonymous_id):
            raise ConfigurationError(
                f"{where} anonymous-id reader: must be a callable taking the cookie's value"
            )
        if not isinstance(consent, Mapping) or not all(
            isinstance(name, str) and name and callable(reader) for name, reader in consent.items()
        ):
            raise ConfigurationError(
                f"{where} consent cookies: must be a mapping of cookie name to a reader "
                "(a callable taking the cookie's value), e.g. "
                "{'CookieConsent': klaviyo_signal.integrations.cookies.cookiebot}; {} reads none"
            )
        return cls(anonymous_id, read_anonymous_id, dict(consent))

    def context(
        self, cookies: Mapping[str, str], user_id: object, traits: Mapping[str, Any] | None
    ) -> RequestContext | None:
        """Return the request's context, or None when it has nothing to put in one.

        A value the visitor sent that no reader understands, or one that breaks a rule, is
        left out (logged at debug); a user id or traits the app gave that break a rule are
        left out with a warning. A request never fails because of them.
        """
        anonymous_id = None
        if self.anonymous_id is not None:
            raw = cookies.get(self.anonymous_id)
            if raw:
                anonymous_id = _read(self.read_anonymous_id, raw, self.anonymous_id)
        consent = None
        for name, reader in self.consent.items():
            raw = cookies.get(name)
            if raw is not None:
                consent = _read(reader, raw, name)
                if consent is not None:
                    break
        if user_id is None and anonymous_id is None and not traits and consent is None:
            return None
        context = make_context(
            user_id=user_id,
            anonymous_id=anonymous_id,
            traits=traits,
            consent=consent,
            skip=self._skip,
        )
        return None if context == _EMPTY else context

    def _skip(self, field: str, error: ValidationError) -> None:
        # The error text may quote the value (an email, a cookie): not logged.
        if field in ("anonymous_id", "consent"):
            log.debug("klaviyo-signal: the request's %s cookie is not usable; left out", field)
        else:
            log.warning(
                "klaviyo-signal: the %s the middleware read for this request breaks a rule "
                "(see klaviyo_signal.request_context); calls in the request go without it",
                field,
            )


def _read(reader: Callable[[str], Any], raw: str, name: str) -> Any:
    """Return what a cookie reader makes of a value, or None if it raised."""
    try:
        return reader(raw)
    except Exception:
        log.debug("klaviyo-signal: the reader of the %s cookie raised; cookie ignored", name)
        return None


def user_identity(user: object, attribute: str) -> object:
    """Return an authenticated user's id attribute, or None (anonymous or no user)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    try:
        return getattr(user, attribute, None)
    except NotImplementedError:  # Starlette's BaseUser.identity, when a user class lacks it
        return None
