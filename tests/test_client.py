"""The Client's construction, secrets, lifetime and outcomes as a user sees them."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

import klaviyo_signal
from klaviyo_signal import (
    Client,
    ConfigurationError,
    Delivery,
    DeliveryStatus,
    KlaviyoSignalError,
    ValidationError,
    default_blueprint,
)
from klaviyo_signal.testing import FakeKlaviyo
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY


def test_error_tree() -> None:
    """Configuration and validation errors are ValueErrors under the library's root error."""
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(ValidationError, ValueError)
    for name in ("APIError", "TransportError", "ConfigurationError", "ValidationError"):
        assert issubclass(getattr(klaviyo_signal, name), KlaviyoSignalError)
    assert issubclass(klaviyo_signal.RateLimitError, klaviyo_signal.APIError)
    assert issubclass(klaviyo_signal.RequestTimeoutError, klaviyo_signal.TransportError)


def test_delivery_status_is_a_str_enum() -> None:
    """DeliveryStatus values compare equal to their strings."""
    assert DeliveryStatus.QUEUED == "queued"
    assert [s.value for s in DeliveryStatus] == ["queued", "delivered", "dropped", "failed"]


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        (("AbC12", PRIVATE_KEY), {}, "public_api_key: 'AbC12' is not a Klaviyo public key"),
        (("AbC12!", PRIVATE_KEY), {}, "6 letters or digits"),
        ((PUBLIC_KEY, "sk_live_123456"), {}, "private keys start with 'pk_'"),
        ((PUBLIC_KEY, "XyZ789"), {}, "looks like the public key"),
        ((PUBLIC_KEY, PRIVATE_KEY), {"base_url": "http://a.klaviyo.com"}, "plain http"),
        ((PUBLIC_KEY, PRIVATE_KEY), {"base_url": "ftp://x"}, "not an http(s) URL"),
        ((PUBLIC_KEY, PRIVATE_KEY), {"revision": "latest"}, "revision: 'latest'"),
        ((PUBLIC_KEY, PRIVATE_KEY), {"timeout": 0}, "timeout: must be a number above 0"),
        ((PUBLIC_KEY, PRIVATE_KEY), {"max_retries": -1}, "max_retries: must be a whole number"),
        ((PUBLIC_KEY, PRIVATE_KEY), {"default_phone_region": "gb"}, "two-letter ISO 3166"),
        ((PUBLIC_KEY, PRIVATE_KEY), {"blueprint": {}}, "blueprint: expected"),
        ((PUBLIC_KEY, PRIVATE_KEY), {"on_delivery": 3}, "on_delivery: must be a function"),
    ],
)
def test_bad_configuration_fails_at_construction(
    args: tuple[str, str], options: dict[str, Any], message: str
) -> None:
    """Each bad key or option raises ConfigurationError naming it, never showing the key."""
    with pytest.raises(ConfigurationError, match=None) as caught:
        Client(*args, **options)
    assert message in str(caught.value)
    assert PRIVATE_KEY not in str(caught.value)
    assert "sk_live_123456" not in str(caught.value)


def test_loopback_http_is_allowed() -> None:
    """Plain http is accepted for loopback test servers only."""
    for url in ("http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:9"):
        Client(PUBLIC_KEY, PRIVATE_KEY, base_url=url).close()


def test_private_key_never_shown(fake: FakeKlaviyo, caplog: pytest.LogCaptureFixture) -> None:
    """The private key appears in no repr, log line or recorded request."""
    caplog.set_level(logging.DEBUG)
    client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, sync_mode=True)
    client.identify("u-1")
    fake.fail_next(401)
    with pytest.raises(klaviyo_signal.AuthenticationError) as caught:
        client.page(user_id="u-1")
    client.close()
    shown = [repr(client), str(caught.value), repr(caught.value), caplog.text, repr(fake.requests)]
    for text in shown:
        assert PRIVATE_KEY not in text
    assert "pk_***" in repr(client)


def test_message_id_is_the_unique_id(fake: FakeKlaviyo) -> None:
    """A given message_id is the event's unique_id; otherwise a fresh uuid4 is used."""
    client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, sync_mode=True)
    given = client.page(user_id="u-1", message_id="m-1")
    generated = client.page(user_id="u-1")
    assert given.message_id == "m-1"
    assert uuid.UUID(generated.message_id).version == 4
    ids = [r.body["data"]["attributes"]["unique_id"] for r in fake.requests]
    assert ids == ["m-1", generated.message_id]


def test_retried_event_is_recorded_once(fake: FakeKlaviyo) -> None:
    """A POST retried after a dropped connection is recorded once thanks to unique_id."""
    client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, sync_mode=True)
    fake.drop_next_connection()
    delivery = client.track("Order Completed", {"revenue": 5, "currency": "USD"}, user_id="u")
    assert delivery.status is DeliveryStatus.DELIVERED
    assert len(fake.events) == 1


def test_identify_answers_201_then_200(fake: FakeKlaviyo) -> None:
    """identify reports Klaviyo's 201 for a new profile and 200 for an update."""
    client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, sync_mode=True)
    assert client.identify("u-1", {"email": "a@example.com"}).http_status == 201
    assert client.identify("u-1", {"first_name": "Ann"}).http_status == 200


def test_on_delivery_gets_every_final_outcome(fake: FakeKlaviyo) -> None:
    """on_delivery sees delivered, dropped and failed outcomes, but not refused input."""
    seen: list[Delivery] = []
    client = Client(
        PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, sync_mode=True, on_delivery=seen.append
    )
    client.page(user_id="u-1")
    client.track("Custom", user_id="u-1")
    fake.fail_next(400)
    with pytest.raises(klaviyo_signal.BadRequestError):
        client.page(user_id="u-1")
    with pytest.raises(ValidationError):
        client.page()
    assert [d.status for d in seen] == ["delivered", "dropped", "failed"]


def test_on_delivery_errors_are_logged_not_raised(
    fake: FakeKlaviyo, caplog: pytest.LogCaptureFixture
) -> None:
    """A callback that raises is logged and does not break the call."""

    def broken(_: Delivery) -> None:
        raise RuntimeError("boom")

    client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, sync_mode=True, on_delivery=broken)
    assert client.page(user_id="u-1").status is DeliveryStatus.DELIVERED
    assert "on_delivery callback raised" in caplog.text


def test_background_call_returns_queued_then_delivers(fake: FakeKlaviyo) -> None:
    """In background mode a call returns queued at once; flush() delivers it."""
    seen: list[Delivery] = []
    with Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, on_delivery=seen.append) as client:
        delivery = client.track("Order Completed", {"revenue": 9, "currency": "EUR"}, user_id="u-1")
        assert delivery.status is DeliveryStatus.QUEUED
        assert client.flush(timeout=10)
        final = delivery.wait(timeout=10)
    assert final.status is DeliveryStatus.DELIVERED
    assert [d.message_id for d in seen] == [delivery.message_id]
    assert len(fake.events) == 1


def test_background_validation_error_raises_at_the_call(fake: FakeKlaviyo) -> None:
    """Bad input raises in the caller's thread even in background mode."""
    with (
        Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url) as client,
        pytest.raises(ValidationError, match="timestamp"),
    ):
        client.page(user_id="u-1", timestamp="1999-01-01T00:00:00Z")


def test_context_manager_closes_and_flushes(fake: FakeKlaviyo) -> None:
    """Leaving the with-block sends what is queued; close() twice is harmless."""
    with Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url) as client:
        for i in range(5):
            client.page(user_id=f"u-{i}")
    client.close()
    assert len(fake.events) == 5


def test_from_env(monkeypatch: pytest.MonkeyPatch, fake: FakeKlaviyo) -> None:
    """from_env reads both keys and the optional base URL; missing keys are named."""
    monkeypatch.delenv("KLAVIYO_PUBLIC_API_KEY", raising=False)
    monkeypatch.delenv("KLAVIYO_PRIVATE_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="KLAVIYO_PUBLIC_API_KEY, KLAVIYO_PRIVATE_API_KEY"):
        Client.from_env()
    monkeypatch.setenv("KLAVIYO_PUBLIC_API_KEY", PUBLIC_KEY)
    monkeypatch.setenv("KLAVIYO_PRIVATE_API_KEY", PRIVATE_KEY)
    monkeypatch.setenv("KLAVIYO_BASE_URL", fake.url)
    client = Client.from_env(sync_mode=True)
    assert client.page(user_id="u-1").http_status == 202


def test_from_install(fake: FakeKlaviyo) -> None:
    """from_install reads the integration-install JSON; options override it."""
    payload = {
        "name": "klaviyo",
        "variant": "default",
        "config": {"public_api_key": PUBLIC_KEY, "private_api_key": PRIVATE_KEY},
        "delivery_mode": "server_side",
    }
    client = Client.from_install(payload, base_url=fake.url, sync_mode=True)
    assert client.track("Product Viewed", {"product_id": "p"}, user_id="u").http_status == 202
    with pytest.raises(ConfigurationError, match=r"config\.private_api_key is missing"):
        Client.from_install({"config": {"public_api_key": PUBLIC_KEY}})
    with pytest.raises(ConfigurationError, match="delivery_mode 'client_side'"):
        Client.from_install({**payload, "delivery_mode": "client_side"})
    with pytest.raises(ConfigurationError, match="unknown blueprint variant"):
        Client.from_install({**payload, "variant": "nope"})


def test_from_install_honours_the_variant(fake: FakeKlaviyo) -> None:
    """from_install with variant klaviyo_ecommerce sends Klaviyo's own metric names."""
    payload = {
        "name": "klaviyo",
        "variant": "klaviyo_ecommerce",
        "config": {"public_api_key": PUBLIC_KEY, "private_api_key": PRIVATE_KEY},
        "delivery_mode": "server_side",
    }
    client = Client.from_install(payload, base_url=fake.url, sync_mode=True)
    client.track("Product Viewed", {"product_id": "p"}, user_id="u")
    assert [event.metric for event in fake.events] == ["Viewed Product"]


def test_client_explain_sends_nothing(fake: FakeKlaviyo) -> None:
    """client.explain shows the exact request a call would make, with the key masked."""
    client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, sync_mode=True)
    explanation = client.explain(
        "track", "Order Completed", {"revenue": 5, "currency": "USD"}, user_id="u"
    )
    assert explanation.status == "send"
    (request,) = explanation.requests
    assert (request.method, request.path) == ("POST", "/api/events")
    assert request.headers["Authorization"] == "Klaviyo-API-Key pk_***"
    assert request.body["data"]["attributes"]["value"] == 5  # type: ignore[index, call-overload]
    dropped = client.explain("track", "Signed Up", user_id="u")
    assert dropped.status == "drop"
    assert dropped.reason is not None
    assert fake.requests == []


@pytest.mark.parametrize("padding", ["\n", " ", "\t", "\r\n"])
def test_private_key_with_whitespace_is_refused(padding: str) -> None:
    """A key with a trailing newline (read from a file) fails at construction, unshown."""
    with pytest.raises(ConfigurationError, match="whitespace or control characters") as caught:
        Client(PUBLIC_KEY, PRIVATE_KEY + padding)
    assert PRIVATE_KEY not in str(caught.value)


def test_transport_errors_do_not_carry_the_key() -> None:
    """No exception chain, traceback frame or local of a network error holds the key."""
    client = Client(
        PUBLIC_KEY, PRIVATE_KEY, base_url="http://127.0.0.1:9", sync_mode=True, max_retries=0
    )
    with pytest.raises(klaviyo_signal.NetworkError) as caught:
        client.page(user_id="u-1")
    seen: list[str] = []
    error: BaseException | None = caught.value
    while error is not None:
        seen.append(repr(error))
        seen.append(repr(vars(error)))
        request = getattr(error, "request", None)
        assert request is None or PRIVATE_KEY not in repr(getattr(request, "headers", ""))
        tb = error.__traceback__
        while tb is not None:
            seen.extend(repr(value) for value in tb.tb_frame.f_locals.values())
            tb = tb.tb_next
        error = error.__cause__ or error.__context__
    assert all(PRIVATE_KEY not in text for text in seen)


def test_enable_checks_its_arguments() -> None:
    """enable() and disable() refuse a non-string name or an empty metric clearly."""
    with pytest.raises(ValidationError, match="enable: name must be a non-empty event name"):
        default_blueprint().enable(5)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="enable: metric"):
        default_blueprint().enable("Signed Up", metric="")
    with pytest.raises(ValidationError, match="disable: name"):
        default_blueprint().disable("")


def test_repr_of_a_half_built_client_does_not_raise() -> None:
    """repr() of a Client whose construction failed, or of a subclass before super().__init__,
    shows it is not configured instead of raising."""

    class Early(Client):
        def __init__(self) -> None:
            self.shown = repr(self)

    assert Early().shown == "<Early (not configured)>"
    client = Client.__new__(Client)
    with pytest.raises(ConfigurationError):
        client.__init__("", PRIVATE_KEY)  # type: ignore[misc]
    assert repr(client) == "<Client (not configured)>"
