"""Outcomes of calls, and the two ways of delivering them: now (sync) or queued (background).

Every call ends in exactly one final ``Delivery``: ``delivered``, ``dropped`` or ``failed``.
Background mode hands back a ``queued`` Delivery at once; ``Delivery.wait()`` gives the
final one. Sync mode sends a ``Job`` with ``send_job``; background mode hands the call to
the worker (``_worker.py``), which batches.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Sequence

import attrs

from ._errors import APIError, KlaviyoSignalError, TransportError

__all__ = ["Delivery", "DeliveryStatus", "Job", "OnDelivery", "Ticket", "send_job"]

log = logging.getLogger("klaviyo_signal")


class DeliveryStatus(str, enum.Enum):
    """Where a call stands. Only ``queued`` is not final."""

    QUEUED = "queued"
    DELIVERED = "delivered"
    DROPPED = "dropped"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


class Ticket:
    """The handle a queued Delivery keeps to learn its final outcome.

    All tickets of a client share one Condition: a call in the caller's hot path then
    allocates one small object, not a lock, and the worker wakes waiters once per batch.
    """

    __slots__ = ("_final", "_signal")

    def __init__(self, signal: threading.Condition) -> None:
        self._signal = signal
        self._final: Delivery | None = None

    def resolve(self, final: Delivery) -> None:
        """Record the final outcome and wake whoever waits on it."""
        with self._signal:
            self._final = final
            self._signal.notify_all()

    @staticmethod
    def wake_all(signal: threading.Condition) -> None:
        """Wake every waiter of ``signal`` after tickets became final (see ``outcome``)."""
        with signal:
            signal.notify_all()

    def outcome(self) -> Delivery | None:
        """Return the final outcome, or None while there is none yet.

        A subclass may make it on demand: most calls' outcome is never asked for.
        """
        return self._final

    def wait(self, timeout: float | None) -> Delivery | None:
        """Return the final outcome, or None if ``timeout`` passes first."""
        with self._signal:
            self._signal.wait_for(lambda: self.outcome() is not None, timeout)
            return self.outcome()


@attrs.frozen
class Delivery:
    """The outcome of one identify, track, page, subscribe or unsubscribe call.

    Attributes:
        message_id: The call's id; also the Klaviyo event's ``unique_id``.
        status: queued, delivered, dropped or failed.
        reason: Why it was dropped or failed (None when delivered or queued).
        http_status: Klaviyo's HTTP status, when a request was answered.
    """

    message_id: str
    status: DeliveryStatus
    reason: str | None = None
    http_status: int | None = None
    _ticket: Ticket | None = attrs.field(default=None, eq=False, repr=False, alias="ticket")

    def wait(self, timeout: float | None = None) -> Delivery:
        """Return the final Delivery, waiting for the background worker if needed.

        Returns this Delivery itself when it is already final, or still ``queued`` when
        ``timeout`` seconds pass first.
        """
        if self._ticket is None or self.status is not DeliveryStatus.QUEUED:
            return self
        return self._ticket.wait(timeout) or self


OnDelivery = Callable[[Delivery], object]


@attrs.frozen
class Job:
    """One accepted call, ready to send: its requests as (path, body bytes) pairs."""

    message_id: str
    requests: Sequence[tuple[str, bytes]]
    ticket: Ticket | None = None


def send_job(
    post: Callable[[str, bytes], int], job: Job
) -> tuple[Delivery, KlaviyoSignalError | None]:
    """Send a job's requests in order; return its final Delivery and the error, if any."""
    status: int | None = None
    for path, body in job.requests:
        try:
            status = post(path, body)
        except APIError as exc:
            return Delivery(job.message_id, DeliveryStatus.FAILED, str(exc), exc.status), exc
        except TransportError as exc:
            return Delivery(job.message_id, DeliveryStatus.FAILED, str(exc)), exc
    return Delivery(job.message_id, DeliveryStatus.DELIVERED, None, status), None
