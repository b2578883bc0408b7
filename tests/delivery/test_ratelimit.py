"""Client-side rate limits: the sliding log, header corrections, 429 pauses, and on the wire."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klaviyo_signal import Client, DeliveryStatus, default_blueprint
from klaviyo_signal._delivery.ratelimit import EndpointLimiter, published_limits
from klaviyo_signal.testing import FakeKlaviyo
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY

BULK = "POST /api/event-bulk-create-jobs"
BLUEPRINT = default_blueprint().enable("Signed Up")


class Clock:
    """A fake monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def simulate(
    limiter: EndpointLimiter, clock: Clock, uploads: list[float], horizon: float
) -> list[tuple[float, float]]:
    """Send back to back for ``horizon`` seconds; return each request's (start, end)."""
    sent = []
    i = 0
    while clock.now < 1000.0 + horizon:
        clock.now += limiter.delay()
        start = clock.now
        limiter.begin()
        clock.now += uploads[i % len(uploads)]
        limiter.end()
        sent.append((start, clock.now))
        i += 1
    return sent


def worst_span(sent: list[tuple[float, float]], limit: int) -> float:
    """The shortest gap between a request's start and the end of the one ``limit`` before it.

    Klaviyo receives each request between its start and end; a gap of at least the span
    means no span of that length can hold ``limit + 1`` of them, however they fall.
    """
    return min(
        (sent[k][0] - sent[k - limit][1] for k in range(limit, len(sent))), default=float("inf")
    )


@settings(max_examples=40, deadline=None)
@given(uploads=st.lists(st.floats(min_value=0.0, max_value=0.7), min_size=1, max_size=30))
def test_limiter_never_exceeds_burst_or_steady_in_any_span(uploads: list[float]) -> None:
    """Whatever the upload times, no 1-s span holds over 10 and no 60-s span over 150."""
    clock = Clock()
    limiter = EndpointLimiter(10, 150, clock=clock)
    sent = simulate(limiter, clock, uploads, horizon=150.0)
    assert worst_span(sent, 10) >= 1.0
    assert worst_span(sent, 150) >= 60.0


def test_limiter_uses_most_of_the_allowance() -> None:
    """With instant requests the limiter reaches at least 90% of the steady limit."""
    clock = Clock()
    limiter = EndpointLimiter(10, 150, clock=clock)
    sent = simulate(limiter, clock, [0.0], horizon=600.0)
    per_minute = len(sent) / (sent[-1][1] - sent[0][0]) * 60
    assert per_minute >= 0.9 * 150
    first_second = [s for s, _ in sent if s < 1000.0 + 1.0]
    assert len(first_second) == 10


def test_slow_uploads_do_not_stack_into_one_window() -> None:
    """A request counts when it completes, so a slow one delays the next by the full span."""
    clock = Clock()
    limiter = EndpointLimiter(1, 100, clock=clock)
    limiter.begin()
    clock.now += 0.9  # an upload that took 0.9 s
    limiter.end()
    assert limiter.delay() == pytest.approx(1.0, abs=0.02)


def test_in_flight_requests_count() -> None:
    """Requests still in flight fill the window until they complete."""
    clock = Clock()
    limiter = EndpointLimiter(2, 100, clock=clock)
    limiter.begin()
    limiter.begin()
    assert limiter.delay() > 0
    limiter.end()
    limiter.end()
    assert limiter.delay() > 0.9


def test_remaining_zero_waits_for_reset() -> None:
    """RateLimit-Remaining: 0 holds the endpoint until RateLimit-Reset, though our log is empty."""
    clock = Clock()
    limiter = EndpointLimiter(10, 150, clock=clock)
    limiter.begin()
    limiter.end({"RateLimit-Limit": "150", "RateLimit-Remaining": "0", "RateLimit-Reset": "7"})
    assert limiter.delay() == pytest.approx(7.0)
    clock.now += 7.0
    assert limiter.delay() == 0.0


def test_remaining_budget_is_spent_before_waiting() -> None:
    """RateLimit-Remaining: 2 lets two more requests start, then waits for the reset."""
    clock = Clock()
    limiter = EndpointLimiter(100, 1000, clock=clock)
    limiter.begin()
    limiter.end({"ratelimit-remaining": "2", "ratelimit-reset": "30"})
    for _ in range(2):
        assert limiter.delay() == 0.0
        limiter.begin()
    assert limiter.delay() == pytest.approx(30.0)


def test_throttle_pauses_for_retry_after_or_backs_off() -> None:
    """A 429 pauses for Retry-After; without it the pause starts near 1 s and doubles."""
    clock = Clock()
    limiter = EndpointLimiter(None, None, clock=clock)
    assert limiter.throttle(4.0) == 4.0
    assert limiter.delay() == pytest.approx(4.0)
    clock.now += 4.0
    limiter.begin()
    limiter.end()  # a success ends the run of 429s
    first = limiter.throttle(None)
    second = limiter.throttle(None)
    assert 0.5 <= first <= 1.0
    assert 1.0 <= second <= 2.0
    limiter.begin()
    limiter.end()
    assert 0.5 <= limiter.throttle(None) <= 1.0  # a success resets the backoff


def test_published_limits_come_from_the_package_data() -> None:
    """The default limits are Klaviyo's published ones for the revision sent."""
    limits = published_limits()
    assert limits[BULK] == (10, 150)
    assert limits["POST /api/profile-import"] == (75, 750)
    assert limits["POST /api/events"] == (350, 3500)
    assert published_limits("2024-10-15")["POST /api/profile-import"] == (75, 700)


def test_client_pacing_provokes_no_429_from_a_limiting_klaviyo() -> None:
    """Against a fake enforcing 3 jobs/s, back-to-back jobs get no 429 at all."""
    limits = {BULK: (3, 1000)}
    with FakeKlaviyo(rate_limits=limits) as fake:
        client = Client(
            PUBLIC_KEY,
            PRIVATE_KEY,
            base_url=fake.url,
            blueprint=BLUEPRINT,
            flush_interval=60.0,
            rate_limits=limits,
        )
        started = time.monotonic()
        for i in range(8):
            client.track("Signed Up", {"n": i}, user_id="user-1")
            assert client.flush(timeout=30)
        elapsed = time.monotonic() - started
        client.close()
        assert fake.throttled == 0
        assert [r.status for r in fake.requests] == [202] * 8
        assert elapsed >= 1.9  # 8 jobs at 3 per second need more than two seconds
        assert client.stats.rate_limited == 0


class Scripted:
    """A tiny Klaviyo stand-in that answers from a script of (status, headers)."""

    def __init__(self, script: list[tuple[int, dict[str, str]]]) -> None:
        self.script = list(script)
        self.times: list[float] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                scripted.times.append(time.monotonic())
                status, headers = scripted.script.pop(0) if scripted.script else (202, {})
                body = b'{"errors": []}' if status >= 400 else b""
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[list[Scripted]]:
    made: list[Scripted] = []
    yield made
    for server in made:
        server.close()


def _send_two_jobs(url: str) -> tuple[Client, list[DeliveryStatus]]:
    client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=url, blueprint=BLUEPRINT, flush_interval=60)
    first = client.track("Signed Up", user_id="user-1")
    assert client.flush(timeout=30)
    second = client.track("Signed Up", user_id="user-2")
    assert client.flush(timeout=30)
    client.close()
    return client, [first.wait(1).status, second.wait(1).status]


def test_ratelimit_headers_hold_the_next_job(scripted: list[Scripted]) -> None:
    """After 'RateLimit-Remaining: 0, Reset: 2' the next job waits about two seconds."""
    server = Scripted(
        [(202, {"RateLimit-Limit": "150", "RateLimit-Remaining": "0", "RateLimit-Reset": "2"})]
    )
    scripted.append(server)
    _, statuses = _send_two_jobs(server.url)
    assert statuses == [DeliveryStatus.DELIVERED] * 2
    assert server.times[1] - server.times[0] >= 1.5


def test_retry_after_as_http_date_pauses_the_endpoint(scripted: list[Scripted]) -> None:
    """A 429 with an HTTP-date Retry-After pauses until then, and the job is then delivered."""
    server = Scripted([(429, {"Retry-After": formatdate(time.time() + 2, usegmt=True)})])
    scripted.append(server)
    client, statuses = _send_two_jobs(server.url)
    assert statuses == [DeliveryStatus.DELIVERED] * 2
    assert len(server.times) == 3
    assert server.times[1] - server.times[0] >= 0.5  # HTTP-dates have 1-s resolution
    assert client.stats.rate_limited == 1
