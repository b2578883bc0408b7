"""Disabled mode: every call is checked as usual and nothing is sent."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

from klaviyo_signal import Client, ConfigurationError, DeliveryStatus, ValidationError
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY

ORDER = {"order_id": "o-1", "revenue": 9.5, "currency": "USD"}


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A listening socket on 127.0.0.1 that records whether anyone connected."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.2)
        yield server


def connected(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
    except TimeoutError:
        return False
    return True


def url(server: socket.socket) -> str:
    return f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.mark.parametrize("sync_mode", [False, True])
def test_a_disabled_client_checks_every_call_and_drops_it_as_disabled(
    listener: socket.socket, sync_mode: bool
) -> None:
    """Each kind of call ends dropped with reason disabled (counted in stats), the fast
    lane included, while bad input still raises ValidationError; no thread, no socket."""
    before = {t.name for t in threading.enumerate()}
    client = Client(
        PUBLIC_KEY, PRIVATE_KEY, base_url=url(listener), sync_mode=sync_mode, disabled=True
    )
    deliveries = [
        client.track("Order Completed", ORDER, user_id="u"),  # the fast lane's kind of call
        client.track("Product Viewed", {"sku": "s"}, anonymous_id="a", context={"ip": "1.2.3.4"}),
        client.track("Custom Thing", user_id="u"),  # the blueprint would drop it
        client.track("Order Completed", ORDER, user_id="u", consent={"marketing": False}),
        client.page("Pricing", user_id="u"),
        client.identify("u", {"email": "u@example.com"}),
        client.subscribe(email="u@example.com", list_id="Y6nRLr"),
        client.unsubscribe(email="u@example.com"),
    ]
    with pytest.raises(ValidationError):
        client.track("Order Completed", ORDER)  # no identifier
    with pytest.raises(ValidationError):
        client.identify("u", {"email": "not an email"})
    assert {(d.status, d.reason) for d in deliveries} == {(DeliveryStatus.DROPPED, "disabled")}
    assert client.stats.dropped_by_reason == {"disabled": len(deliveries)}
    assert client.flush(timeout=1)
    assert asyncio.run(client.atrack("Order Completed", ORDER, user_id="u")).reason == "disabled"
    client.close()
    assert {t.name for t in threading.enumerate()} - before == set()
    assert not connected(listener)
    assert "disabled" in repr(client)


def test_the_environment_variable_disables_clients_unless_they_say_otherwise(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """KLAVIYO_SIGNAL_DISABLED=1 disables Client(...) and Client.from_env(), says so in a
    WARNING, and an explicit disabled=False wins over it."""
    monkeypatch.setenv("KLAVIYO_SIGNAL_DISABLED", "1")
    monkeypatch.setenv("KLAVIYO_PUBLIC_API_KEY", PUBLIC_KEY)
    monkeypatch.setenv("KLAVIYO_PRIVATE_API_KEY", PRIVATE_KEY)
    for client in (Client(PUBLIC_KEY, PRIVATE_KEY), Client.from_env()):
        assert client.track("Order Completed", ORDER, user_id="u").reason == "disabled"
        client.close()
    assert "KLAVIYO_SIGNAL_DISABLED" in caplog.text
    enabled = Client(PUBLIC_KEY, PRIVATE_KEY, base_url="http://127.0.0.1:9", disabled=False)
    assert enabled.track("Order Completed", ORDER, user_id="u").status is DeliveryStatus.QUEUED
    enabled.close()
    monkeypatch.setenv("KLAVIYO_SIGNAL_DISABLED", "0")
    off = Client(PUBLIC_KEY, PRIVATE_KEY, base_url="http://127.0.0.1:9", sync_mode=True)
    assert "disabled" not in repr(off)
    off.close()


@pytest.mark.parametrize("value", ["2", "maybe", "disabled"])
def test_an_unreadable_environment_value_fails_at_construction(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """A KLAVIYO_SIGNAL_DISABLED value that is not on/off fails naming the variable."""
    monkeypatch.setenv("KLAVIYO_SIGNAL_DISABLED", value)
    with pytest.raises(ConfigurationError, match="KLAVIYO_SIGNAL_DISABLED"):
        Client(PUBLIC_KEY, PRIVATE_KEY)


def test_disabled_must_be_a_bool() -> None:
    """disabled= takes True, False or None, and says so otherwise."""
    with pytest.raises(ConfigurationError, match="disabled"):
        Client(PUBLIC_KEY, PRIVATE_KEY, disabled="yes")  # type: ignore[arg-type]
