"""HTTP outcomes replayed from cassettes: statuses, typed errors, retries, error text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import vcr

from klaviyo_signal import (
    APIError,
    AuthenticationError,
    BadRequestError,
    Client,
    Delivery,
    DeliveryStatus,
    NetworkError,
    PermissionDeniedError,
    RateLimitError,
    RevisionGoneError,
)
from klaviyo_signal import _version as version_module
from klaviyo_signal._klaviyo.revisions import DEFAULT_REVISION
from tests.conftest import PRIVATE_KEY, PUBLIC_KEY, Capture, assert_valid
from tests.record_cassettes import track

CASSETTES = Path(__file__).parents[1] / "cassettes"
# Nothing listens here: every answer comes from a cassette.
REPLAY_URL = "http://127.0.0.1:9"

replay = vcr.VCR(
    cassette_library_dir=str(CASSETTES),
    record_mode="none",
    match_on=["method", "path"],
    filter_headers=["authorization"],
)


@pytest.fixture
def seen() -> list[Delivery]:
    return []


@pytest.fixture
def client(seen: list[Delivery]) -> Iterator[Client]:
    with Client(
        PUBLIC_KEY, PRIVATE_KEY, base_url=REPLAY_URL, sync_mode=True, on_delivery=seen.append
    ) as built:
        yield built


def test_cassettes_hold_no_key_and_valid_bodies() -> None:
    """No cassette contains the private key or an Authorization header; bodies are valid."""
    for path in CASSETTES.glob("*.yaml"):
        text = path.read_text()
        assert PRIVATE_KEY not in text
        assert "authorization:" not in text.lower()
        assert "Klaviyo-API-Key pk_" not in text
    cassette = vcr.cassette.Cassette.load(path=str(CASSETTES / "event_202.yaml"))
    for request in cassette.requests:
        assert_valid("/api/events", json.loads(request.body))


def test_202_is_delivered(client: Client, seen: list[Delivery]) -> None:
    """A 202 answer ends the call delivered with http_status 202."""
    with replay.use_cassette("event_202.yaml") as cassette:
        delivery = track(client)
    assert delivery == Delivery(
        "00000000-0000-4000-8000-000000000001", DeliveryStatus.DELIVERED, None, 202
    )
    assert cassette.play_count == 1
    assert seen == [delivery]


def test_400_raises_with_klaviyo_detail_and_pointer(client: Client, seen: list[Delivery]) -> None:
    """A 400 raises BadRequestError quoting Klaviyo's detail and source.pointer."""
    with replay.use_cassette("event_400.yaml"), pytest.raises(BadRequestError) as caught:
        track(client)
    error = caught.value
    assert error.status == 400
    assert error.errors[0].detail == "The payload provided in the request is invalid."
    assert error.errors[0].pointer == "/data"
    assert "The payload provided in the request is invalid. (at /data)" in str(error)
    assert error.request_id
    (delivery,) = seen
    assert delivery.status is DeliveryStatus.FAILED
    assert delivery.http_status == 400


def test_401_says_where_to_fix_the_key(client: Client, seen: list[Delivery]) -> None:
    """A 401 raises AuthenticationError telling where to verify the key and which scopes."""
    with replay.use_cassette("event_401.yaml"), pytest.raises(AuthenticationError) as caught:
        track(client)
    text = str(caught.value)
    assert "Account > Settings > API Keys" in text
    assert "events:write" in text
    assert "profiles:write" in text
    assert PRIVATE_KEY not in text
    assert seen[0].status is DeliveryStatus.FAILED


def test_403_names_the_missing_scopes(client: Client) -> None:
    """A 403 raises PermissionDeniedError naming the scopes to add."""
    with replay.use_cassette("event_403.yaml"), pytest.raises(PermissionDeniedError) as caught:
        track(client)
    assert "events:write" in str(caught.value)
    assert caught.value.status == 403


def test_410_says_to_set_revision(client: Client) -> None:
    """A 410 raises RevisionGoneError telling to pass revision=."""
    with replay.use_cassette("event_410.yaml"), pytest.raises(RevisionGoneError) as caught:
        track(client)
    assert "revision=" in str(caught.value)
    assert isinstance(caught.value, APIError)


def test_429_is_retried_after_retry_after(client: Client) -> None:
    """A 429 with Retry-After is retried and the call ends delivered."""
    with replay.use_cassette("event_429_then_202.yaml") as cassette:
        delivery = track(client)
    assert delivery.status is DeliveryStatus.DELIVERED
    assert delivery.http_status == 202
    assert cassette.play_count == 2


def test_429_without_retries_raises_rate_limit_error() -> None:
    """With max_retries=0 a 429 raises RateLimitError carrying retry_after."""
    client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=REPLAY_URL, sync_mode=True, max_retries=0)
    with (
        replay.use_cassette("event_429_then_202.yaml", allow_playback_repeats=False),
        pytest.raises(RateLimitError) as caught,
    ):
        track(client)
    assert caught.value.retry_after == 1.0
    assert "rate limit" in str(caught.value)


def test_5xx_is_retried(client: Client) -> None:
    """A 503 is retried and the call ends delivered."""
    with replay.use_cassette("event_503_then_202.yaml") as cassette:
        delivery = track(client)
    assert delivery.status is DeliveryStatus.DELIVERED
    assert cassette.play_count == 2


def test_request_headers_on_the_wire(capture: Capture) -> None:
    """Every request carries the key, revision, JSON:API content type and User-Agent."""
    client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=capture.url, sync_mode=True)
    track(client)
    ((path, headers, _),) = capture.requests
    assert path == "/api/events"
    assert headers["Authorization"] == f"Klaviyo-API-Key {PRIVATE_KEY}"
    assert headers["revision"] == DEFAULT_REVISION
    assert headers["Content-Type"] == "application/vnd.api+json"
    assert headers["User-Agent"] == f"klaviyo-signal/{version_module.VERSION}"


def test_unreachable_klaviyo_raises_network_error() -> None:
    """A refused connection raises NetworkError, not a requests exception, without the key."""
    client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=REPLAY_URL, sync_mode=True, max_retries=0)
    with pytest.raises(NetworkError) as caught:
        track(client)
    assert "could not reach Klaviyo" in str(caught.value)
    assert PRIVATE_KEY not in str(caught.value)
    # No chained requests/urllib3 exception: their frames hold the Authorization header.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


def test_proxy_from_the_environment_is_used(
    capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP(S)_PROXY is honoured (read once, when the Client is built)."""
    monkeypatch.setenv("HTTP_PROXY", capture.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url="http://localhost:9", sync_mode=True)
    track(client)
    ((path, headers, _),) = capture.requests
    assert path == "http://localhost:9/api/events"  # the proxy form of the request line
    assert headers["Authorization"] == f"Klaviyo-API-Key {PRIVATE_KEY}"


def test_no_proxy_is_honoured(capture: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=capture.url, sync_mode=True)
    track(client)
    ((path, _, _),) = capture.requests
    assert path == "/api/events"


def test_a_netrc_entry_never_replaces_the_api_key(
    capture: Capture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    client = Client(PUBLIC_KEY, PRIVATE_KEY, base_url=capture.url, sync_mode=True)
    track(client)
    ((_, headers, _),) = capture.requests
    assert headers["Authorization"] == f"Klaviyo-API-Key {PRIVATE_KEY}"
