"""A tiny Django project run in a subprocess by tests/integrations/test_django.py.

It logs a user in, sends requests through Django's test clients (WSGI and ASGI) to views
that call the client with no identity arguments, and prints what each view saw as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable

import django
from django.conf import settings

settings.configure(
    DEBUG=True,
    SECRET_KEY="test-only",
    ALLOWED_HOSTS=["testserver"],
    ROOT_URLCONF=__name__,
    DATABASES={
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["DJANGO_DB"]}
    },
    INSTALLED_APPS=[
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
    ],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "klaviyo_signal.integrations.django.KlaviyoSignalMiddleware",
    ],
    KLAVIYO_SIGNAL=json.loads(os.environ.get("KLAVIYO_SIGNAL_SETTINGS", "{}")),
    USE_TZ=True,
)
django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.test import AsyncClient, Client  # noqa: E402
from django.urls import path  # noqa: E402

import klaviyo_signal  # noqa: E402

client = klaviyo_signal.Client(
    "AbC123",
    "pk_test_0123456789abcdef0123456789abcdef",
    base_url=os.environ["FAKE_URL"],
    sync_mode=True,
)


def seen() -> dict[str, object]:
    context = klaviyo_signal.current_context()
    if context is None:
        return {}
    return {
        "user_id": context.user_id,
        "anonymous_id": context.anonymous_id,
        "traits": dict(context.traits),
        "consent": dict(context.consent),
    }


def answer(call: Callable[[], klaviyo_signal.Delivery]) -> JsonResponse:
    """Return what the view's call ended as, and the context the view saw."""
    try:
        delivery = call()
    except klaviyo_signal.ValidationError as error:
        return JsonResponse({"error": str(error), "seen": seen()})
    return JsonResponse(
        {"status": delivery.status.value, "message_id": delivery.message_id, "seen": seen()}
    )


def order(request: HttpRequest) -> JsonResponse:
    return answer(lambda: client.track("Order Completed"))


def for_customer(request: HttpRequest) -> JsonResponse:
    return answer(lambda: client.track("Order Completed", user_id="customer-7"))


async def async_order(request: HttpRequest) -> JsonResponse:
    # The call waits for Klaviyo (sync mode): off the event loop, in the request's context.
    return await asyncio.to_thread(answer, lambda: client.track("Order Completed"))


urlpatterns = [
    path("order", order),
    path("for-customer", for_customer),
    path("async-order", async_order),
]


def get(browser: object, url: str) -> object:
    """Send one GET through a test client (WSGI or ASGI) and return its JSON."""
    answer = browser.get(url)  # type: ignore[attr-defined]
    if asyncio.iscoroutine(answer):
        answer = asyncio.run(answer)
    return answer.json()  # type: ignore[attr-defined]


def main() -> None:
    call_command("migrate", run_syncdb=True, verbosity=0)
    user = User.objects.create_user("ada", email="ada@example.com", password="x")
    out: list[object] = []
    for mode in sys.argv[1:]:
        if mode.startswith("custom"):  # run with KLAVIYO_SIGNAL_SETTINGS naming other sources
            browser = Client() if mode == "custom" else AsyncClient()
            browser.cookies["my_anon"] = "anon-9"
            browser.cookies["OptanonConsent"] = (
                "isGpcEnabled=0&version=202401.1.0&groups=C0001%3A1%2CC0002%3A1%2CC0004%3A0"
            )
            browser.force_login(user)
            out.append(get(browser, "/order" if mode == "custom" else "/async-order"))
            continue
        make = Client if mode == "wsgi" else AsyncClient
        prefix = "" if mode == "wsgi" else "async-"
        browser = make()
        browser.cookies["ajs_anonymous_id"] = "%22anon-1%22"
        browser.cookies["CookieConsent"] = (
            "{stamp:%27x%27%2Cnecessary:true%2Cpreferences:false%2Cstatistics:true"
            "%2Cmarketing:true%2Cmethod:%27explicit%27%2Cver:1}"
        )
        out.append(get(browser, f"/{prefix}order?order={mode}-anonymous"))
        browser.force_login(user)
        out.append(get(browser, f"/{prefix}order?order={mode}-logged-in"))
        out.append(get(browser, "/for-customer"))
        stranger = make()
        stranger.cookies["ajs_anonymous_id"] = "anon-2"
        stranger.cookies["CookieConsent"] = "{necessary:true%2Cmarketing:false}"
        out.append(get(stranger, f"/{prefix}order?order={mode}-stranger"))
        out.append(get(make(), f"/{prefix}order?order={mode}-nobody"))
    out.append({"after": seen()})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
