"""An ASGI middleware (Starlette, FastAPI) that gives each request's calls the visitor's
identity and consent::

    app = FastAPI()
    app.add_middleware(KlaviyoSignalMiddleware)

Inside a request, ``client.track("Order Completed", props)`` then carries the ``ajs_anonymous_id``
cookie, the consent cookie's categories and, with Starlette's ``AuthenticationMiddleware``
added after this one (so it runs first), ``scope["user"].identity``; the call's own arguments
win (see ``klaviyo_signal.request_context``). It is a pure ASGI middleware: it does not wrap
the response, so streaming and background tasks keep working. docs/fastapi.md has the options.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from starlette.requests import cookie_parser

from .._calls.context import RequestContext, using
from .._errors import ConfigurationError
from ._web import ANONYMOUS_ID_COOKIE, Cookies, user_identity
from .cookies import DEFAULT_CONSENT_COOKIES, ConsentReader, segment_anonymous_id

__all__ = ["KlaviyoSignalMiddleware", "scope_user_id"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def scope_user_id(scope: Scope) -> object:
    """The default ``user_id``: ``scope["user"].identity`` for an authenticated user, else None."""
    return user_identity(scope.get("user"), "identity")


class KlaviyoSignalMiddleware:
    """Sets the request context (``klaviyo_signal.request_context``) for each HTTP and
    WebSocket connection.

    Args:
        app: The ASGI app to wrap.
        user_id: Takes the ASGI scope, returns the user id (str, int or None); default
            ``scope_user_id``. None: no user id.
        traits: Takes the scope, returns traits (e.g. ``{"email": ...}``) or None.
        anonymous_id_cookie: The anonymous-id cookie; None: none is read.
        anonymous_id_reader: Reads that cookie's value (default Segment's format).
        consent_cookies: Cookie name -> reader; the first present and understood wins
            (default Cookiebot's ``CookieConsent`` and OneTrust's ``OptanonConsent``); ``{}``:
            none is read.

    A value that breaks a rule is left out (logged), never failing the request.

    Raises:
        ConfigurationError: An option is not of the documented kind.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        user_id: Callable[[Scope], object] | None = scope_user_id,
        traits: Callable[[Scope], Mapping[str, Any] | None] | None = None,
        anonymous_id_cookie: str | None = ANONYMOUS_ID_COOKIE,
        anonymous_id_reader: Callable[[str], str | None] = segment_anonymous_id,
        consent_cookies: Mapping[str, ConsentReader] = DEFAULT_CONSENT_COOKIES,
    ) -> None:
        for name, value in (("user_id", user_id), ("traits", traits)):
            if value is not None and not callable(value):
                raise ConfigurationError(
                    f"KlaviyoSignalMiddleware {name}: must be a callable taking the ASGI "
                    f"scope, or None; got {value!r}"
                )
        self.app = app
        self._user_id = user_id
        self._traits = traits
        self._cookies = Cookies.checked(
            anonymous_id_cookie, anonymous_id_reader, consent_cookies, "KlaviyoSignalMiddleware"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan: no request, no context
            return
        with using(self._context(scope)):
            await self.app(scope, receive, send)

    def _context(self, scope: Scope) -> RequestContext | None:
        cookies: dict[str, str] = {}
        for name, value in scope.get("headers", ()):
            if name == b"cookie":
                cookies.update(cookie_parser(value.decode("latin-1")))
        user_id = None if self._user_id is None else self._user_id(scope)
        traits = None if self._traits is None else self._traits(scope)
        return self._cookies.context(cookies, user_id, traits)
