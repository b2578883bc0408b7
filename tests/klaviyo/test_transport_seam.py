"""The transport seam: ``Client(transport=...)``, the requests default, FakeKlaviyo in-process."""

from __future__ import annotations

import pytest

from klaviyo_signal import (
    BadRequestError,
    Client,
    ConfigurationError,
    DeliveryStatus,
    NetworkError,
    RequestsTransport,
)
from klaviyo_signal.testing import FakeKlaviyo
from klaviyo_signal.typing import HTTPRequest, HTTPResponse
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY


class Recording:
    """A transport around another one that keeps every request it passes on."""

    def __init__(self, inner: RequestsTransport | object) -> None:
        self.inner = inner
        self.requests: list[HTTPRequest] = []
        self.closed = 0

    def handle(self, request: HTTPRequest) -> HTTPResponse:
        self.requests.append(request)
        return self.inner.handle(request)  # type: ignore[attr-defined,no-any-return]

    def close(self) -> None:
        self.closed += 1


def test_sync_mode_reaches_the_fake_in_process_without_a_server() -> None:
    """With FakeKlaviyo.transport() a sync call is recorded by a fake that never listened."""
    fake = FakeKlaviyo()
    assert not fake.running
    client = Client(PUBLIC_KEY, PRIVATE_KEY, sync_mode=True, transport=fake.transport())
    delivery = client.track("Order Completed", {"revenue": 9.5, "currency": "EUR"}, user_id="u1")
    assert delivery.status is DeliveryStatus.DELIVERED
    assert delivery.http_status == 202
    (event,) = fake.events_for(external_id="u1")
    assert event.metric == "purchase"
    assert event.value == 9.5
    assert fake.requests[0].headers["authorization"] == "Klaviyo-API-Key pk_***"
    client.close()


def test_background_mode_sends_its_bulk_jobs_in_process() -> None:
    """The worker sends through the given transport too: calls end delivered, as over HTTP."""
    fake = FakeKlaviyo()
    client = Client(PUBLIC_KEY, PRIVATE_KEY, transport=fake.transport(), flush_interval=0.01)
    deliveries = [client.track("Product Viewed", user_id=f"u{i}") for i in range(25)]
    assert client.flush(10)
    assert {d.wait(0).status for d in deliveries} == {DeliveryStatus.DELIVERED}
    assert len(fake.events) == 25
    assert {r.path for r in fake.requests} == {"/api/event-bulk-create-jobs"}
    client.close()


def test_the_fakes_faults_and_checks_hold_in_process() -> None:
    """A fault queued on the fake, and a dropped connection, are what the client sees in-process."""
    fake = FakeKlaviyo()
    client = Client(PUBLIC_KEY, PRIVATE_KEY, sync_mode=True, transport=fake.transport())
    fake.fail_next(400)
    with pytest.raises(BadRequestError):
        client.page(user_id="u1")
    fake.drop_next_connection()
    with pytest.raises(NetworkError, match="dropped the connection"):
        client.page(user_id="u1")
    assert client.page(user_id="u1").status is DeliveryStatus.DELIVERED
    client.close()


def test_a_wrapping_transport_sees_every_request_with_the_key_masked_in_its_repr() -> None:
    """A user's transport gets the whole request; its repr never shows the private key."""
    with FakeKlaviyo() as fake:
        recording = Recording(RequestsTransport())
        client = Client(
            PUBLIC_KEY, PRIVATE_KEY, base_url=fake.url, sync_mode=True, transport=recording
        )
        client.identify("u1", {"email": "a@example.com"})
        client.close()
        url = fake.url
    (request,) = recording.requests
    assert request.method == "POST"
    assert request.url == url + "/api/profile-import"
    assert request.headers["Authorization"] == f"Klaviyo-API-Key {PRIVATE_KEY}"
    assert PRIVATE_KEY not in repr(request)
    assert b'"external_id":"u1"' in request.body
    assert recording.closed >= 1  # closing the Client closes its transport


def test_the_client_side_endpoint_never_gets_the_private_key_through_any_transport() -> None:
    """The anonymous-id link goes out without Authorization, whatever the transport."""
    fake = FakeKlaviyo()
    recording = Recording(fake.transport())
    client = Client(PUBLIC_KEY, PRIVATE_KEY, sync_mode=True, transport=recording)
    client.identify("u1", {"email": "a@example.com"}, anonymous_id="anon-1")
    client.close()
    link = next(r for r in recording.requests if "/client/profiles" in r.url)
    assert "Authorization" not in link.headers
    assert link.url.endswith(f"?company_id={PUBLIC_KEY}")


def test_an_object_that_is_not_a_transport_is_refused_at_construction() -> None:
    """transport= takes an object with handle() and close(); anything else is a clear error."""
    with pytest.raises(ConfigurationError, match="transport: expected"):
        Client(PUBLIC_KEY, PRIVATE_KEY, transport=object())  # type: ignore[arg-type]


def test_closing_a_background_client_closes_its_given_transport_once() -> None:
    """A given transport, shared by sync calls and the worker, is closed once by close()."""
    fake = FakeKlaviyo()
    recording = Recording(fake.transport())
    client = Client(PUBLIC_KEY, PRIVATE_KEY, transport=recording)
    delivery = client.track("Order Completed", {"revenue": 9.5, "currency": "EUR"}, user_id="u1")
    assert delivery.wait(10).status is DeliveryStatus.DELIVERED
    client.close()
    assert recording.closed == 1


def test_a_transport_that_breaks_still_ends_the_sync_call_once() -> None:
    """A user's transport raising its own error: the call ends failed, counted and called back."""

    class Broken:
        def handle(self, request: HTTPRequest) -> HTTPResponse:
            raise ValueError("proxy misconfigured")

        def close(self) -> None:
            pass

    seen: list[object] = []
    client = Client(
        PUBLIC_KEY, PRIVATE_KEY, sync_mode=True, transport=Broken(), on_delivery=seen.append
    )
    with pytest.raises(ValueError, match="proxy misconfigured"):
        client.page(user_id="u1")
    client.close()
    assert client.stats.failed_by_reason == {"internal error": 1}
    (delivery,) = seen
    assert delivery.status is DeliveryStatus.FAILED  # type: ignore[attr-defined]
