"""Re-record the HTTP cassettes in tests/cassettes/ (run by hand, never by the test suite).

Each scenario runs the real Client in sync mode against ``FakeKlaviyo``, which answers with
Klaviyo's documented responses (bodies copied from Klaviyo's errors.json), while vcrpy
records. The Authorization header is removed before anything is written.

    python tests/record_cassettes.py
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import vcr

from klaviyo_signal import Client, KlaviyoSignalError
from klaviyo_signal.testing import FakeKlaviyo

HERE = Path(__file__).parent / "cassettes"
PRIVATE_KEY = "pk_test_0123456789abcdef0123456789abcdef"

# Klaviyo's real 400 body for a malformed profile object (errors.json).
BAD_REQUEST = {
    "errors": [
        {
            "id": "51c07451-b09a-4e77-a460-13cd0b920a28",
            "status": 400,
            "code": "invalid",
            "title": "Invalid input.",
            "detail": "The payload provided in the request is invalid.",
            "source": {"pointer": "/data"},
            "meta": {},
        }
    ]
}


def track(client: Client) -> Any:
    return client.track(
        "Order Completed",
        {"order_id": "o-1", "revenue": 42.5, "currency": "GBP"},
        user_id="u-1",
        message_id="00000000-0000-4000-8000-000000000001",
        timestamp="2026-01-02T03:04:05+00:00",
    )


SCENARIOS: dict[str, Callable[[FakeKlaviyo], None]] = {
    "event_202": lambda fake: None,
    "event_400": lambda fake: fake.fail_next(400, body=BAD_REQUEST),
    "event_401": lambda fake: fake.fail_next(401),
    "event_403": lambda fake: fake.fail_next(403),
    "event_410": lambda fake: fake.fail_next(410),
    "event_429_then_202": lambda fake: fake.fail_next(429, retry_after=1),
    "event_503_then_202": lambda fake: fake.fail_next(503),
}


def main() -> None:
    recorder = vcr.VCR(
        cassette_library_dir=str(HERE),
        record_mode="all",
        filter_headers=["authorization"],
        decode_compressed_response=True,
    )
    for name, arrange in SCENARIOS.items():
        with FakeKlaviyo() as fake:
            arrange(fake)
            client = Client("AbC123", PRIVATE_KEY, base_url=fake.url, sync_mode=True)
            with recorder.use_cassette(f"{name}.yaml"), contextlib.suppress(KlaviyoSignalError):
                track(client)
            client.close()
        text = (HERE / f"{name}.yaml").read_text()
        if PRIVATE_KEY in text:
            raise SystemExit(f"{name}: the private key leaked into the cassette")
        print(f"recorded {name}")


if __name__ == "__main__":
    main()
