"""A Django middleware that gives each request's calls the visitor's identity and consent.

Add it after Django's ``AuthenticationMiddleware``::

    MIDDLEWARE = [
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "klaviyo_signal.integrations.django.KlaviyoSignalMiddleware",
    ]

Inside a request, ``client.track("Order Completed", props)`` then carries the logged-in
user's id and email, the ``ajs_anonymous_id`` cookie and the consent cookie's categories,
unless the call passes its own (see ``klaviyo_signal.request_context``). It runs under WSGI
and ASGI alike (sync and async capable). Configure it with a ``KLAVIYO_SIGNAL`` setting;
docs/django.md lists the keys and their defaults.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.utils.module_loading import import_string

from .._calls.context import RequestContext, using
from .._errors import ConfigurationError
from ._web import ANONYMOUS_ID_COOKIE, Cookies, user_identity
from .cookies import DEFAULT_CONSENT_COOKIES, segment_anonymous_id

__all__ = ["KlaviyoSignalMiddleware", "user_email"]

_SETTING = "KLAVIYO_SIGNAL"
_KEYS = ("USER_ID", "TRAITS", "ANONYMOUS_ID_COOKIE", "ANONYMOUS_ID_READER", "CONSENT_COOKIES")

Getter = Callable[[Any], Any]


def user_email(request: Any) -> Mapping[str, Any] | None:
    """The default ``TRAITS``: ``{"email": request.user.email}`` for a logged-in user with one."""
    return _email_of(getattr(request, "user", None))


def _email_of(user: object) -> Mapping[str, Any] | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    email = getattr(user, "email", None)
    return {"email": email} if email else None


class KlaviyoSignalMiddleware:
    """Sets the request context (``klaviyo_signal.request_context``) for each request.

    Settings (``KLAVIYO_SIGNAL = {...}``, every key optional):

    - ``USER_ID``: the attribute of ``request.user`` that is the user id (default ``"pk"``),
      or a callable (or its dotted path) taking the request and returning a str, int or None.
    - ``TRAITS``: a callable (or dotted path) taking the request and returning traits or
      None; default ``user_email`` (the logged-in user's email). None: no traits.
    - ``ANONYMOUS_ID_COOKIE``: the anonymous-id cookie (default ``"ajs_anonymous_id"``);
      None: none is read. ``ANONYMOUS_ID_READER`` reads its value (default
      ``cookies.segment_anonymous_id``).
    - ``CONSENT_COOKIES``: cookie name -> reader (default Cookiebot's ``CookieConsent`` and
      OneTrust's ``OptanonConsent``; see ``klaviyo_signal.integrations.cookies``); a reader
      may be a dotted path; ``{}``: none is read.

    A user id, cookie or traits value that breaks a rule is left out (logged), never failing
    the request. Callables run on the request's thread; under ASGI through ``sync_to_async``.

    Raises:
        ConfigurationError: A setting is not of the documented kind (at start-up).
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)
        options = getattr(settings, _SETTING, None) or {}
        if not isinstance(options, Mapping):
            raise ConfigurationError(f"settings.{_SETTING}: must be a dict, got {options!r}")
        unknown = sorted(set(options) - set(_KEYS))
        if unknown:
            raise ConfigurationError(
                f"settings.{_SETTING}: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"the keys are {', '.join(_KEYS)}"
            )
        user_id = _callable(options.get("USER_ID", "pk"), _key("USER_ID"), attribute_ok=True)
        self._user_attribute = user_id if isinstance(user_id, str) else None
        self._user_id = None if isinstance(user_id, str) else user_id
        self._traits = _callable(options.get("TRAITS", user_email), _key("TRAITS"))
        self._cookies = Cookies.checked(
            options.get("ANONYMOUS_ID_COOKIE", ANONYMOUS_ID_COOKIE),
            _callable(
                options.get("ANONYMOUS_ID_READER", segment_anonymous_id),
                _key("ANONYMOUS_ID_READER"),
            ),
            _readers(options.get("CONSENT_COOKIES", DEFAULT_CONSENT_COOKIES)),
            f"settings.{_SETTING}",
        )
        # The default getters read only the user object: under ASGI they need no thread.
        self._inline = self._user_id is None and self._traits in (user_email, None)

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self._acall(request)
        with using(self._context(request, getattr(request, "user", None))):
            return self.get_response(request)

    async def _acall(self, request: Any) -> Any:
        if self._inline:
            user = await _auser(request)
            context = self._context(request, user)
        else:
            context = await sync_to_async(self._context_sync, thread_sensitive=True)(request)
        with using(context):
            return await self.get_response(request)

    def _context_sync(self, request: Any) -> RequestContext | None:
        return self._context(request, getattr(request, "user", None))

    def _context(self, request: Any, user: object) -> RequestContext | None:
        if self._user_attribute is not None:
            user_id = user_identity(user, self._user_attribute)
        else:
            user_id = self._user_id(request)  # type: ignore[misc]
        if self._traits is None:
            traits = None
        elif self._traits is user_email:
            traits = _email_of(user)
        else:
            traits = self._traits(request)
        return self._cookies.context(request.COOKIES, user_id, traits)


async def _auser(request: Any) -> object:
    """Return the request's user under ASGI without a sync database call on the loop."""
    auser: Callable[[], Awaitable[object]] | None = getattr(request, "auser", None)
    if auser is None:
        return None  # no AuthenticationMiddleware before this one
    return await auser()


def _readers(value: object) -> object:
    """Return CONSENT_COOKIES with dotted-path readers imported (anything else as given)."""
    if not isinstance(value, Mapping):
        return value
    where = _key("CONSENT_COOKIES")
    return {
        name: None if reader is None else _callable(reader, f"{where}[{name!r}]")
        for name, reader in value.items()
    }


def _key(name: str) -> str:
    return f"settings.{_SETTING}[{name!r}]"


def _callable(value: object, where: str, *, attribute_ok: bool = False) -> Any:
    """Return a setting's callable (imported if a dotted path), an attribute name, or None."""
    if value is None:
        if attribute_ok:
            raise ConfigurationError(f"{where}: must be an attribute name or a callable, not None")
        return None
    if isinstance(value, str):
        if attribute_ok and value.isidentifier():
            return value
        try:
            value = import_string(value)
        except ImportError as error:
            raise ConfigurationError(f"{where}: cannot import {value!r} ({error})") from None
    if not callable(value):
        raise ConfigurationError(f"{where}: must be a callable (or its dotted path), got {value!r}")
    return value
