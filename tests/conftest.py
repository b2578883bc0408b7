"""Shared fixtures: Klaviyo's official schemas, and a raw capture server for wire bytes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator

from klaviyo_signal import Blueprint, Client, Delivery, DeliveryStatus
from klaviyo_signal._explain import Explanation, explain
from klaviyo_signal._klaviyo.revisions import DEFAULT_REVISION, OPERATIONS, revision
from klaviyo_signal.testing import FakeKlaviyo
from klaviyo_signal.testing.schema import schema_revision

PUBLIC_KEY = "AbC123"
PRIVATE_KEY = "pk_test_0123456789abcdef0123456789abcdef"


def schema_errors(path: str, body: Any, revision_name: str = DEFAULT_REVISION) -> list[str]:
    """Return every way ``body`` breaks Klaviyo's official request schema for ``path`` under
    ``revision_name`` (the schemas the package ships, copied from Klaviyo's spec)."""
    key = f"POST {path.partition('?')[0]}"
    if key not in OPERATIONS and path.startswith("/api/profile-bulk-import-jobs/"):
        return []  # polling a job: a GET, no body
    operation = OPERATIONS[key]
    validator = OAS30Validator(
        schema_revision(operation, revision(revision_name)).schema(operation)
    )
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)
    ]


def assert_valid(path: str, body: Any, revision_name: str = DEFAULT_REVISION) -> None:
    """Fail with every schema problem when a request body is not valid for Klaviyo."""
    problems = schema_errors(path, body, revision_name)
    assert not problems, problems


class Capture:
    """A tiny HTTP server on 127.0.0.1 that keeps the raw bytes of every request."""

    def __init__(self, status: int = 202, body: bytes = b"") -> None:
        self.status = status
        self.body = body
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                capture.requests.append((self.path, dict(self.headers), self.rfile.read(length)))
                self.send_response(capture.status)
                self.send_header("Content-Length", str(len(capture.body)))
                self.end_headers()
                self.wfile.write(capture.body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def fake() -> Iterator[FakeKlaviyo]:
    """A local Klaviyo for one test."""
    with FakeKlaviyo() as server:
        yield server


def explain_checked(
    blueprint: Blueprint, kind: Any, *args: Any, require_consent: bool = False, **kwargs: Any
) -> Explanation:
    """Explain one call with fixed ids, checking every request body against the schemas."""
    kwargs.setdefault("message_id", "m-1")
    if kind != "identify":
        kwargs.setdefault("user_id", "u-1")
    explanation = explain(
        blueprint=blueprint,
        require_consent=require_consent,
        default_phone_region=None,
        revision=DEFAULT_REVISION,
        kind=kind,
        args=args,
        kwargs=kwargs,
    )
    for request in explanation.requests:
        assert_valid(request.path, request.body)
    return explanation


@pytest.fixture
def capture() -> Iterator[Capture]:
    """A raw capture server answering 202 to everything."""
    server = Capture()
    yield server
    server.close()


def refuse_item(fake: FakeKlaviyo, pointer: str, detail: str) -> None:
    """Make ``fake`` answer the next request with Klaviyo's 400 naming one item."""
    error = {
        "id": "e1",
        "status": 400,
        "code": "invalid",
        "title": "Invalid input.",
        "detail": detail,
        "source": {"pointer": pointer},
    }
    fake.fail_next(400, body={"errors": [error]})


def close_and_check_middle_refused(client: Client, calls: list[Delivery], detail: str) -> None:
    """Close ``client``; of three ``calls`` only the middle one failed, with ``detail`` (400)."""
    client.close()
    finals = [call.wait(timeout=10) for call in calls]
    assert [f.status for f in finals] == [
        DeliveryStatus.DELIVERED,
        DeliveryStatus.FAILED,
        DeliveryStatus.DELIVERED,
    ]
    assert finals[1].reason == detail
    assert finals[1].http_status == 400
