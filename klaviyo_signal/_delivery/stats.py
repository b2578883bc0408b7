"""Delivery counters: what a dashboard reads from ``client.stats``.

The worker and the callers update one ``Counters`` under its lock; ``client.stats`` hands
out a frozen ``Stats`` snapshot, so a reader never sees a half-updated set of numbers.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import attrs

from .._errors import RequestTimeoutError, TransportError

__all__ = [
    "DUPLICATE",
    "MAX_REASONS",
    "OTHER_REASON",
    "Counters",
    "Stats",
    "drop_key",
    "failure_key",
]

# Reasons are short sentences, but a blueprint's drop reason names the event: cap the keys so
# a stream of odd event names cannot grow the mappings without bound.
MAX_REASONS = 100
OTHER_REASON = "other"


@attrs.frozen
class Stats:
    """A snapshot of a Client's delivery counters since it was built (or forked).

    Attributes:
        queued: Calls accepted in background mode and not final yet (queued or in flight).
        queue_bytes: The estimated memory those queued calls hold, in bytes.
        delivered: Calls Klaviyo accepted.
        dropped: Calls never sent: consent, blueprint, a full queue, a closed client, shutdown.
        failed: Calls Klaviyo refused, or that could not be sent (network, retries ran out).
        retries: Requests sent again (after a 429, a 5xx or a connection error).
        rate_limited: 429 answers received.
        requests: HTTP requests sent, retries included.
        bytes_sent: Request body bytes sent, retries included.
        dropped_by_reason: ``dropped`` split by reason.
        failed_by_reason: ``failed`` split by reason.
    """

    queued: int = 0
    queue_bytes: int = 0
    delivered: int = 0
    dropped: int = 0
    failed: int = 0
    retries: int = 0
    rate_limited: int = 0
    requests: int = 0
    bytes_sent: int = 0
    dropped_by_reason: Mapping[str, int] = attrs.field(factory=dict)
    failed_by_reason: Mapping[str, int] = attrs.field(factory=dict)


class Counters:
    """The live, lock-protected counters behind ``Stats``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.delivered = 0
        self.dropped = 0
        self.failed = 0
        self.retries = 0
        self.rate_limited = 0
        self.requests = 0
        self.bytes_sent = 0
        self._dropped_by: dict[str, int] = {}
        self._failed_by: dict[str, int] = {}

    def outcome(self, status: str, reason: str | None, count: int = 1) -> None:
        """Count ``count`` calls that ended with ``status`` (a DeliveryStatus value)."""
        with self._lock:
            if status == "delivered":
                self.delivered += count
            elif status == "dropped":
                self.dropped += count
                _bump(self._dropped_by, reason, count)
            elif status == "failed":
                self.failed += count
                _bump(self._failed_by, reason, count)

    def request(self, sent_bytes: int, *, retries: int = 0, rate_limited: bool = False) -> None:
        """Count one HTTP request (and the retries urllib3 made inside it)."""
        with self._lock:
            self.requests += 1 + retries
            self.bytes_sent += sent_bytes * (1 + retries)
            self.retries += retries
            if rate_limited:
                self.rate_limited += 1

    def retry(self) -> None:
        """Count one request the worker is about to send again."""
        with self._lock:
            self.retries += 1

    def snapshot(self, *, queued: int, queue_bytes: int) -> Stats:
        """Return the counters as a frozen ``Stats``."""
        with self._lock:
            return Stats(
                queued=queued,
                queue_bytes=queue_bytes,
                delivered=self.delivered,
                dropped=self.dropped,
                failed=self.failed,
                retries=self.retries,
                rate_limited=self.rate_limited,
                requests=self.requests,
                bytes_sent=self.bytes_sent,
                dropped_by_reason=dict(self._dropped_by),
                failed_by_reason=dict(self._failed_by),
            )


def failure_key(http_status: int | None, error: BaseException | None = None) -> str:
    """Return the ``failed_by_reason`` key of a failure: ``HTTP 400``, ``timeout`` or ``network``.

    Klaviyo's error text carries request ids and field values, so it would make one key per
    failure; the status makes a key a dashboard can chart.
    """
    if http_status is not None:
        return f"HTTP {http_status}"
    if error is not None and not isinstance(error, TransportError):
        return "internal error"  # a transport of the caller's raised something of its own
    return "timeout" if isinstance(error, RequestTimeoutError) else "network"


DUPLICATE = "duplicate"
"""The ``dropped_by_reason`` key of a call whose message id a queued call has; its reason
starts with it and names the message id."""


def drop_key(reason: str | None) -> str | None:
    """Return the ``dropped_by_reason`` key of a drop: its reason, with one key for every
    repeated message id (``DUPLICATE``)."""
    if reason is not None and reason.startswith(DUPLICATE):
        return DUPLICATE
    return reason


def _bump(by_reason: dict[str, int], reason: str | None, count: int) -> None:
    key = reason or "unknown"
    if key not in by_reason and len(by_reason) >= MAX_REASONS:
        key = OTHER_REASON
    by_reason[key] = by_reason.get(key, 0) + count
