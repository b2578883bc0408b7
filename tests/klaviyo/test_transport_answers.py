"""Answers that are not Klaviyo's: redirects, HTML pages, edge 403s and slow servers."""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import klaviyo_signal
from klaviyo_signal import (
    BlockedByEdgeError,
    Client,
    DeliveryStatus,
    NetworkError,
    PermissionDeniedError,
    RequestTimeoutError,
    UnexpectedResponseError,
)
from klaviyo_signal.testing import FakeKlaviyo
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY

PORTAL = b"<html><body>Sign in to the hotel Wi-Fi</body></html>"
CHALLENGE = b"<!DOCTYPE html><html><title>Just a moment...</title></html>"


class Answering:
    """An HTTP server on 127.0.0.1 that answers every POST under /api with one set answer.

    Any other path (where a redirect points) answers 202, as a server that swallowed the
    request would; ``seen`` records (method, path) of every request.
    """

    def __init__(self) -> None:
        self.status = 202
        self.headers: dict[str, str] = {}
        self.body = b""
        self.delay = 0.0
        self.seen: list[tuple[str, str]] = []
        self.release = threading.Event()
        answering = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answering.seen.append((self.command, self.path))
                if answering.delay:
                    answering.release.wait(answering.delay)
                status, headers, body = answering.status, answering.headers, answering.body
                if not self.path.startswith("/api/"):
                    status, headers, body = 202, {}, b""
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.headers = status, body, dict(headers or {})

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def server() -> Iterator[Answering]:
    answering = Answering()
    yield answering
    answering.close()


def _sync(url: str, **options: Any) -> Client:
    return Client(PUBLIC_KEY, PRIVATE_KEY, base_url=url, sync_mode=True, **options)


def _background(url: str, **options: Any) -> Client:
    return Client(PUBLIC_KEY, PRIVATE_KEY, base_url=url, flush_interval=0.05, **options)


def test_new_errors_are_exported_in_the_tree() -> None:
    """BlockedByEdgeError is a PermissionDeniedError and UnexpectedResponseError an APIError."""
    assert {"BlockedByEdgeError", "UnexpectedResponseError"} <= set(klaviyo_signal.__all__)
    assert issubclass(BlockedByEdgeError, PermissionDeniedError)
    assert issubclass(UnexpectedResponseError, klaviyo_signal.APIError)


@pytest.mark.parametrize("status", [301, 302, 307])
def test_a_redirect_is_not_followed_and_raises_in_sync_mode(server: Answering, status: int) -> None:
    """A 3xx raises UnexpectedResponseError naming the status and Location; nothing is followed."""
    server.answer(status, headers={"Location": f"{server.url}/moved/api/events"})
    seen: list[klaviyo_signal.Delivery] = []
    client = _sync(server.url, on_delivery=seen.append)
    with pytest.raises(UnexpectedResponseError) as caught:
        client.track("Order Completed", {"order_id": "o-1"}, user_id="u-1")
    text = str(caught.value)
    assert f"HTTP {status}" in text
    assert f"Location: {server.url}/moved/api/events" in text
    assert "base_url" in text
    assert server.seen == [("POST", "/api/events")]
    assert [d.status for d in seen] == [DeliveryStatus.FAILED]
    assert client.stats.delivered == 0
    assert client.stats.failed_by_reason == {f"HTTP {status}": 1}
    client.close()


@pytest.mark.parametrize("status", [301, 302, 307])
def test_a_redirect_fails_the_call_in_background_mode(server: Answering, status: int) -> None:
    """In background mode a 3xx ends the call failed, counted under its status, not delivered."""
    server.answer(status, headers={"Location": f"{server.url}/moved/api/event-bulk-create-jobs"})
    client = _background(server.url)
    delivery = client.track("Order Completed", {"order_id": "o-1"}, user_id="u-1")
    final = delivery.wait(timeout=15)
    client.close()
    assert final.status is DeliveryStatus.FAILED
    assert final.http_status == status
    assert f"Location: {server.url}/moved/" in (final.reason or "")
    assert client.stats.delivered == 0
    assert client.stats.failed_by_reason == {f"HTTP {status}": 1}
    assert len(server.seen) == 1


def test_an_html_200_is_not_delivered_in_sync_mode(server: Answering) -> None:
    """A captive portal's 200 HTML page raises UnexpectedResponseError naming the body's type."""
    server.answer(200, PORTAL, {"Content-Type": "text/html; charset=utf-8"})
    client = _sync(server.url)
    with pytest.raises(UnexpectedResponseError) as caught:
        client.track("Order Completed", {"order_id": "o-1"}, user_id="u-1")
    assert "HTTP 200" in str(caught.value)
    assert "text/html" in str(caught.value)
    assert client.stats.delivered == 0
    client.close()


def test_an_html_200_fails_the_call_in_background_mode(server: Answering) -> None:
    """In background mode a 200 HTML page ends the call failed, not delivered."""
    server.answer(200, PORTAL, {"Content-Type": "text/html"})
    client = _background(server.url)
    final = client.track("Order Completed", {"order_id": "o-1"}, user_id="u-1").wait(timeout=15)
    client.close()
    assert final.status is DeliveryStatus.FAILED
    assert client.stats.failed_by_reason == {"HTTP 200": 1}


def test_a_202_with_html_is_not_delivered(server: Answering) -> None:
    """A documented status with a body that is not Klaviyo's JSON is not delivered."""
    server.answer(202, PORTAL, {"Content-Type": "text/html"})
    with pytest.raises(UnexpectedResponseError, match="text/html"):
        _sync(server.url).track("Order Completed", {"order_id": "o-1"}, user_id="u-1")


def test_profile_import_needs_its_documented_status_and_json(server: Answering) -> None:
    """profile-import counts 200 with Klaviyo's JSON as delivered, and a bare 202 as not."""
    client = _sync(server.url)
    body = b'{"data": {"type": "profile", "id": "01J", "attributes": {}}}'
    server.answer(200, body, {"Content-Type": "application/vnd.api+json"})
    assert client.identify("u-1", {"email": "a@example.com"}).status is DeliveryStatus.DELIVERED
    server.answer(202)
    with pytest.raises(UnexpectedResponseError, match="it answers 200 or 201"):
        client.identify("u-1", {"email": "a@example.com"})
    client.close()


def test_a_slow_klaviyo_raises_request_timeout_in_sync_mode(server: Answering) -> None:
    """A server slower than timeout= raises RequestTimeoutError, counted as a timeout."""
    server.delay = 3.0
    client = _sync(server.url, timeout=0.5, max_retries=0)
    with pytest.raises(RequestTimeoutError) as caught:
        client.track("Order Completed", {"order_id": "o-1"}, user_id="u-1")
    assert "did not answer" in str(caught.value)
    assert client.stats.failed_by_reason == {"timeout": 1}
    client.close()


def test_a_slow_klaviyo_is_a_timeout_in_background_mode(server: Answering) -> None:
    """In background mode a server slower than timeout= fails the call as a timeout."""
    server.delay = 3.0
    client = _background(server.url, timeout=0.5, max_retries=0)
    final = client.track("Order Completed", {"order_id": "o-1"}, user_id="u-1").wait(timeout=15)
    client.close()
    assert final.status is DeliveryStatus.FAILED
    assert "did not answer" in (final.reason or "")
    assert client.stats.failed_by_reason == {"timeout": 1}


def test_a_refused_connection_stays_a_network_error() -> None:
    """Nothing listening raises NetworkError, counted as network, not as a timeout."""
    client = _sync("http://127.0.0.1:9", max_retries=0)
    with pytest.raises(NetworkError):
        client.track("Order Completed", {"order_id": "o-1"}, user_id="u-1")
    assert client.stats.failed_by_reason == {"network": 1}


def test_an_edge_403_is_not_called_a_missing_scope(server: Answering) -> None:
    """A 403 challenge page with cf-mitigated raises BlockedByEdgeError, not the scope advice."""
    server.answer(
        403, CHALLENGE, {"Content-Type": "text/html", "cf-mitigated": "challenge", "cf-ray": "8f1"}
    )
    with pytest.raises(BlockedByEdgeError) as caught:
        _sync(server.url).track("Order Completed", {"order_id": "o-1"}, user_id="u-1")
    text = str(caught.value)
    assert "blocked before it reached Klaviyo's API" in text
    assert "Cloudflare" in text
    assert "8f1" in text
    assert "lacks a scope" not in text
    assert isinstance(caught.value, PermissionDeniedError)


def test_a_403_without_json_api_errors_is_an_edge_block(server: Answering) -> None:
    """A 403 whose body is not JSON:API errors is an edge block, even without cf-mitigated."""
    server.answer(403, b"Forbidden", {"Content-Type": "text/plain"})
    with pytest.raises(BlockedByEdgeError):
        _sync(server.url).track("Order Completed", {"order_id": "o-1"}, user_id="u-1")


def test_a_json_api_403_keeps_the_scope_advice(fake: FakeKlaviyo) -> None:
    """Klaviyo's own 403 still raises the scope advice, not the edge one."""
    fake.fail_next(403)
    with pytest.raises(PermissionDeniedError) as caught:
        _sync(fake.url).track("Order Completed", {"order_id": "o-1"}, user_id="u-1")
    assert not isinstance(caught.value, BlockedByEdgeError)
    assert "lacks a scope" in str(caught.value)


def test_the_fake_sends_an_edge_403_that_background_mode_retries(fake: FakeKlaviyo) -> None:
    """FakeKlaviyo's HTML 403 with cf-mitigated is retried with backoff and then delivered."""
    fake.fail_next(
        403,
        body=b"<html>Just a moment...</html>",
        content_type="text/html",
        headers={"cf-mitigated": "challenge"},
    )
    client = _background(fake.url, max_retries=2)
    final = client.track("Order Completed", {"order_id": "o-1"}, user_id="u-1").wait(timeout=15)
    client.close()
    assert final.status is DeliveryStatus.DELIVERED
    assert [r.status for r in fake.requests] == [403, 202]
    assert client.stats.retries >= 1


def test_an_edge_403_that_persists_fails_and_is_logged_once(
    fake: FakeKlaviyo, caplog: pytest.LogCaptureFixture
) -> None:
    """An edge block that outlasts the retries fails each call and logs one line in all."""
    fake.fail_next(403, times=10, body="<html>blocked</html>", content_type="text/html")
    client = _background(fake.url, max_retries=1)
    with caplog.at_level(logging.WARNING, logger="klaviyo_signal"):
        first = client.track("Order Completed", {"order_id": "o-1"}, user_id="u-1").wait(timeout=15)
        second = client.track("Order Completed", {"order_id": "o-1"}, user_id="u-2").wait(
            timeout=15
        )
        client.close()
    assert [first.status, second.status] == [DeliveryStatus.FAILED] * 2
    assert first.http_status == 403
    records = [r for r in caplog.records if "edge in front of Klaviyo" in r.getMessage()]
    assert len(records) == 1
    assert PRIVATE_KEY not in caplog.text


def test_fail_next_sends_a_raw_body_with_its_type_and_headers(fake: FakeKlaviyo) -> None:
    """fail_next with a bytes or str body sends it as it is, with content_type and headers."""
    fake.fail_next(403, body=CHALLENGE, content_type="text/html", headers={"cf-mitigated": "x"})
    fake.fail_next(503, body="<p>down</p>", headers={"Content-Type": "text/html; charset=utf-8"})
    answers = []
    for _ in range(2):
        request = urllib.request.Request(f"{fake.url}/api/events", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        answers.append((caught.value.code, caught.value.headers, caught.value.read()))
        caught.value.close()
    (first, first_headers, first_body), (second, second_headers, second_body) = answers
    assert (first, first_body) == (403, CHALLENGE)
    assert first_headers["Content-Type"] == "text/html"
    assert first_headers["cf-mitigated"] == "x"
    assert (second, second_body) == (503, b"<p>down</p>")
    assert second_headers.get_all("Content-Type") == ["text/html; charset=utf-8"]
    assert [r.status for r in fake.requests] == [403, 503]


def test_fail_next_refuses_a_header_with_a_line_break(fake: FakeKlaviyo) -> None:
    """fail_next refuses header values that would split the response."""
    with pytest.raises(ValueError, match="one-line"):
        fake.fail_next(403, headers={"X-Bad": "a\r\nSet-Cookie: x"})
