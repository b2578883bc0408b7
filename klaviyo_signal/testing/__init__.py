"""Test your Klaviyo integration without Klaviyo: a local fake of its REST API.

``FakeKlaviyo`` serves the endpoints klaviyo-signal uses, under every API revision the
package supports (picked by each request's ``revision`` header), on 127.0.0.1, validates
bodies against that revision's own request schemas, answers with Klaviyo's
status codes and error bodies, and records what it received, so a test can assert on the
events and profiles Klaviyo would hold::

    with FakeKlaviyo() as fake:
        client = Client("AbC123", "pk_...", base_url=fake.url, sync_mode=True)
        client.track("Order Completed", {"total": 9.99}, user_id="user-1")
        assert fake.events_for(external_id="user-1")

or, with no socket at all, ``Client(..., transport=fake.transport())``.

Needs the ``testing`` extra: ``pip install 'klaviyo-signal[testing]'``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType

from klaviyo_signal.testing import schema
from klaviyo_signal.testing.schema import JSON
from klaviyo_signal.testing.server import FakeServer, InProcessTransport, RateLimits
from klaviyo_signal.testing.state import (
    FakeEvent,
    FakeImportJob,
    FakeProfile,
    FakeRequest,
    FakeState,
)

__all__ = ["FakeEvent", "FakeImportJob", "FakeKlaviyo", "FakeProfile", "FakeRequest"]


class FakeKlaviyo:
    """A local Klaviyo REST API in a background thread; use it as a context manager.

    Args:
        latency: Seconds to sleep before answering each request.
        rate_limits: ``True`` to enforce Klaviyo's published per-endpoint burst (per second)
            and steady (per minute) limits; or a mapping such as
            ``{"POST /api/events": (burst, steady)}`` that overrides them (and enforces).
        time_scale: Multiplies the rate-limit window lengths, so ``0.1`` turns the 1 s burst
            window into 0.1 s and the 60 s steady window into 6 s.
        retired: The revisions to treat as retired, as Klaviyo does: a request that names
            one is served as the oldest revision not retired, or answered 410 when it sends
            ``X-Klaviyo-Revision-Fall-Forward-Opt-Out: 1``. None (the default): the ones
            Klaviyo has retired by today's date; ``()``: none.
        scopes: The scopes of the private key the fake plays, e.g. ``["events:write",
            "profiles:write"]``: a request to an endpoint needing another one is answered
            403 naming the missing scopes. None (the default): every scope.
        import_delay: Seconds a bulk profile import job stays ``queued``, then
            ``processing``, before its profiles are imported and it is ``complete``.

    Raises:
        ImportError: The ``testing`` extra (openapi-schema-validator) is not installed.
        ValueError: ``latency`` is negative, ``time_scale`` is not positive, or ``retired``
            names a revision the fake does not serve (or all of them).
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        rate_limits: bool | RateLimits = False,
        time_scale: float = 1.0,
        retired: Iterable[str] | None = None,
        scopes: Iterable[str] | None = None,
        import_delay: float = 0.0,
    ) -> None:
        if latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, got {latency!r}")
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        schema.require_validator()
        if import_delay < 0:
            raise ValueError(f"import_delay must be >= 0 seconds, got {import_delay!r}")
        self._state = FakeState()
        self._state.import_delay = import_delay
        self._server = FakeServer(
            self._state,
            latency=latency,
            rate_limits=rate_limits,
            time_scale=time_scale,
            retired=retired,
            scopes=scopes,
        )

    def __repr__(self) -> str:
        running = f"url={self._server.url!r}" if self.running else "stopped"
        return f"<FakeKlaviyo {running} requests={len(self.requests)} events={len(self.events)}>"

    def __enter__(self) -> FakeKlaviyo:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL to give the client, e.g. ``http://127.0.0.1:54321``."""
        return self._server.url

    @property
    def running(self) -> bool:
        """Whether the server is accepting requests."""
        try:
            self._server.url  # noqa: B018 - raises when stopped
        except RuntimeError:
            return False
        return True

    def transport(self) -> InProcessTransport:
        """A transport that answers in this process, with no socket: ``Client(transport=...)``.

        Requests go through the same checks, faults, rate limits and records as over
        ``url``, whether or not the server is started (``base_url`` is then not used).
        It does not retry: sync mode then raises on the first 5xx or 429.
        """
        return InProcessTransport(self._server)

    def start(self) -> None:
        """Start serving on a free port (does nothing if already running)."""
        self._server.start()

    def stop(self) -> None:
        """Stop serving, close the socket and join the thread (safe to call twice)."""
        self._server.stop()

    @property
    def events(self) -> list[FakeEvent]:
        """Every event recorded (deduplicated by ``unique_id``), oldest first."""
        return self._state.events()

    @property
    def profiles(self) -> list[FakeProfile]:
        """Every profile, after merges, oldest first."""
        return self._state.profiles()

    @property
    def import_jobs(self) -> list[FakeImportJob]:
        """Every bulk profile import job received, oldest first, with its status now."""
        return self._state.import_jobs()

    @property
    def requests(self) -> list[FakeRequest]:
        """Every request received, including rejected, failed and dropped ones."""
        return self._state.requests()

    @property
    def served_as(self) -> str:
        """The revision a retired one is served as: the oldest this fake does not retire."""
        return self._server.served_as

    @property
    def throttled(self) -> int:
        """How many requests the rate limiter answered with 429 (injected faults not counted)."""
        return self._server.throttled

    def profile_for(
        self,
        *,
        email: str | None = None,
        phone_number: str | None = None,
        external_id: str | None = None,
        anonymous_id: str | None = None,
    ) -> FakeProfile | None:
        """Return the profile matching every identifier given, or None."""
        wanted = _Query(email, phone_number, external_id, anonymous_id)
        return next((p for p in self.profiles if wanted.matches(p)), None)

    def events_for(
        self,
        *,
        email: str | None = None,
        phone_number: str | None = None,
        external_id: str | None = None,
        anonymous_id: str | None = None,
        metric: str | None = None,
    ) -> list[FakeEvent]:
        """Return the events whose profile matches every identifier given (and the metric)."""
        wanted = _Query(email, phone_number, external_id, anonymous_id)
        return [
            e
            for e in self.events
            if wanted.matches(e.profile) and (metric is None or e.metric == metric)
        ]

    def reset(self) -> None:
        """Forget all profiles, events, requests, queued faults and the throttled count."""
        self._state.reset()
        self._server.reset()

    def fail_next(
        self,
        status: int,
        times: int = 1,
        retry_after: float | None = None,
        body: JSON | bytes = None,
        *,
        content_type: str = "application/vnd.api+json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` requests with ``status`` and a Klaviyo-shaped error body.

        Failed requests are recorded in ``requests`` but change no state. To play an edge
        block (a Cloudflare challenge, see ``BlockedByEdgeError``)::

            fake.fail_next(403, body=b"<html>...</html>", content_type="text/html",
                           headers={"cf-mitigated": "challenge"})

        Args:
            status: 400-599. 429 sends Klaviyo's real throttled body, 401 its real 401 body.
            times: How many requests in a row fail.
            retry_after: Sent as the ``Retry-After`` header (formatted with ``%g``).
            body: A body to send instead of the default one: ``bytes`` or ``str`` are sent
                as they are (``str`` UTF-8 encoded), anything else JSON-encoded.
            content_type: The ``Content-Type`` header of the answer.
            headers: More response headers (they win over ``Retry-After`` and the
                ``RateLimit-*`` ones; a ``Content-Type`` here replaces ``content_type``).

        Raises:
            ValueError: ``status`` is not 400-599, ``times`` is below 1, or a header name or
                value is not a string or holds a line break.
        """
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), got {status!r}")
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times!r}")
        extra = dict(headers or {})
        for name, value in [("Content-Type", content_type), *extra.items()]:
            if not (isinstance(name, str) and isinstance(value, str)) or any(
                c in name + value for c in "\r\n"
            ):
                raise ValueError(f"header {name!r}: name and value must be one-line strings")
        for name in [n for n in extra if n.lower() == "content-type"]:
            content_type = extra.pop(name)
        raw = body.encode("utf-8") if isinstance(body, str) else body
        self._server.fail_next(
            status, times, retry_after, raw, content_type=content_type, headers=extra
        )

    def drop_next_connection(self) -> None:
        """Close the next request's connection without any response (recorded with status None)."""
        self._server.drop_next_connection()


class _Query:
    """Identifier criteria; every one given must match (emails case-insensitively)."""

    def __init__(
        self,
        email: str | None,
        phone_number: str | None,
        external_id: str | None,
        anonymous_id: str | None,
    ) -> None:
        self._email = email.lower() if email else None
        self._phone_number = phone_number
        self._external_id = external_id
        self._anonymous_id = anonymous_id

    def matches(self, profile: FakeProfile) -> bool:
        return (
            (self._email is None or (profile.email or "").lower() == self._email)
            and (self._phone_number is None or profile.phone_number == self._phone_number)
            and (self._external_id is None or profile.external_id == self._external_id)
            and (self._anonymous_id is None or self._anonymous_id in profile.anonymous_ids)
        )
