"""The ASGI middleware, in real FastAPI and Starlette apps behind Starlette's TestClient."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx2")

from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import klaviyo_signal
from klaviyo_signal import Client, ConfigurationError, DeliveryStatus
from klaviyo_signal.integrations.cookies import json_consent
from klaviyo_signal.integrations.starlette import KlaviyoSignalMiddleware
from klaviyo_signal.testing import FakeKlaviyo
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY

COOKIEBOT_DENIED = "{stamp:%27x%27%2Cnecessary:true%2Cmarketing:false}"


@pytest.fixture
def client(fake: FakeKlaviyo) -> Iterator[Client]:
    """A background client talking to the fake, as an app would build it."""
    with Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url) as built:
        yield built


def seen() -> dict[str, Any]:
    """Return the request context a handler sees, as JSON."""
    context = klaviyo_signal.current_context()
    if context is None:
        return {}
    return {
        "user_id": context.user_id,
        "anonymous_id": context.anonymous_id,
        "consent": dict(context.consent),
    }


def test_fastapi_handlers_send_with_the_visitors_identity_and_consent(
    client: Client, fake: FakeKlaviyo
) -> None:
    """Sync and async FastAPI endpoints' bare track() carry the cookie id and consent."""
    fastapi = pytest.importorskip("fastapi")
    app = fastapi.FastAPI()
    # The user id from a header a gateway sets: any callable taking the scope.
    app.add_middleware(
        KlaviyoSignalMiddleware,
        user_id=lambda scope: dict(scope["headers"]).get(b"x-user-id", b"").decode() or None,
    )

    @app.post("/orders")
    async def place_order() -> dict[str, Any]:
        delivery = client.track("Order Completed", {"value": 12})
        return {"message_id": delivery.message_id, "status": delivery.status.value, **seen()}

    @app.get("/sync-orders")
    def place_sync_order() -> dict[str, Any]:  # run in a worker thread by FastAPI
        delivery = client.track("Order Completed", {"value": 3}, anonymous_id="explicit-anon")
        return {"message_id": delivery.message_id, **seen()}

    with TestClient(app) as browser:
        browser.cookies.set("ajs_anonymous_id", "%22anon-1%22")
        first = browser.post("/orders", headers={"x-user-id": "u-1"}).json()
        second = browser.get("/sync-orders").json()
        browser.cookies.clear()
        browser.cookies.set("ajs_anonymous_id", "anon-2")
        browser.cookies.set("CookieConsent", COOKIEBOT_DENIED)
        third = browser.post("/orders").json()
        fourth = TestClient(app).get("/sync-orders").json()
    assert client.flush(10.0)

    events = {event.unique_id: event for event in fake.events}
    assert events[first["message_id"]].profile.anonymous_ids == ("anon-1",)
    assert events[first["message_id"]].profile.external_id == "u-1"
    # The explicit anonymous_id names another visitor: nothing of the request's is used.
    assert events[second["message_id"]].profile.anonymous_ids == ("explicit-anon",)
    assert third["status"] == DeliveryStatus.DROPPED.value
    assert third["anonymous_id"] == "anon-2"
    assert third["consent"] == {"necessary": True, "marketing": False}
    assert fourth == {"message_id": fourth["message_id"]}  # no cookies: no context leaks in
    assert len(fake.events) == 3


class HeaderAuth(AuthenticationBackend):
    """Logs in the user named by an X-User header, as a session or token backend would."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        name = conn.headers.get("x-user")
        return None if name is None else (AuthCredentials(["authenticated"]), SimpleUser(name))


def test_starlette_reads_the_authenticated_user_and_custom_cookies(
    client: Client, fake: FakeKlaviyo
) -> None:
    """scope["user"] from AuthenticationMiddleware is the user id; options rename the cookies."""

    async def order(request: Request) -> JSONResponse:
        delivery = client.track("Order Completed", {"value": 1})
        return JSONResponse({"message_id": delivery.message_id, **seen()})

    app = Starlette(
        routes=[Route("/order", order)],
        middleware=[
            Middleware(AuthenticationMiddleware, backend=HeaderAuth()),
            Middleware(
                KlaviyoSignalMiddleware,
                traits=lambda scope: (
                    {"email": f"{scope['user'].display_name}@example.com"}
                    if scope["user"].is_authenticated
                    else None
                ),
                anonymous_id_cookie="visitor",
                consent_cookies={"consent": json_consent},
            ),
        ],
    )
    with TestClient(app) as browser:
        browser.cookies.set("visitor", "v-1")
        browser.cookies.set("consent", '{"marketing": true}')
        answer = browser.get("/order", headers={"x-user": "ada"}).json()
    assert client.flush(10.0)
    (event,) = fake.events
    assert answer["user_id"] == "ada"
    assert (event.profile.external_id, event.profile.email) == ("ada", "ada@example.com")
    assert event.profile.anonymous_ids == ("v-1",)
    assert event.properties["consent"] == {"marketing": True}


def test_a_cookie_breaking_a_rule_is_left_out_not_a_500(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """An over-long anonymous id and an unreadable consent cookie leave the request working."""

    async def peek(request: Request) -> JSONResponse:
        return JSONResponse(seen())

    app = Starlette(routes=[Route("/", peek)], middleware=[Middleware(KlaviyoSignalMiddleware)])
    with TestClient(app) as browser, caplog.at_level(logging.DEBUG, "klaviyo_signal"):
        browser.cookies.set("ajs_anonymous_id", "x" * 300)
        browser.cookies.set("CookieConsent", "garbage")
        assert browser.get("/").json() == {}
    assert "anonymous_id cookie is not usable" in caplog.text
    assert "x" * 300 not in caplog.text


def test_bad_options_fail_when_the_app_is_built() -> None:
    """A consent reader that is not callable raises ConfigurationError naming the option."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    with pytest.raises(ConfigurationError, match="consent cookies: must be a mapping"):
        KlaviyoSignalMiddleware(app, consent_cookies={"CookieConsent": "cookiebot"})  # type: ignore[dict-item]
