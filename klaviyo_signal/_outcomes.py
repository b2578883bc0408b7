"""What Klaviyo's answer to a background request means for each call in it.

A 2xx delivers every call in the request. A 400 whose error pointers name bulk items fails
only the calls of those items (their Delivery carries Klaviyo's ``detail``) and hands back
the rest of the job to send again; any other 4xx, or no usable answer after the
transport's retries, fails them all. Problems are logged once per kind, with no event
data and no key. Every call ends exactly once: the worker's answers and the shutdown
sweep race for the same calls, and only the first to settle one counts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import attrs

from ._batcher import BulkJob, failed_items
from ._delivery import Delivery, DeliveryStatus, OnDelivery, Ticket
from ._errors import APIError, AuthenticationError, PermissionDeniedError, TransportError
from ._events import Pending
from ._models import KlaviyoObject
from ._stats import Counters, failure_key
from ._subscription_batcher import SubscriptionJob

__all__ = ["Entry", "Failure", "Identify", "Outcomes", "Unit"]

log = logging.getLogger("klaviyo_signal")


class Entry(Ticket):
    """One queued call: its objects, how many of its parts are unsent, and its Ticket.

    The Entry is its own Ticket (the handle its queued Delivery waits on): one object per
    queued call instead of two, which matters when tens of thousands wait.
    """

    __slots__ = ("done", "failure", "later", "message_id", "objects", "parts", "size", "status")

    def __init__(
        self,
        message_id: str,
        objects: Sequence[KlaviyoObject],
        signal: threading.Condition,
        size: int,
        later: Pending | None = None,
    ) -> None:
        # Ticket's fields, set here: a super() call per queued call is measurable.
        self._signal = signal
        self._final = None
        self.message_id = message_id
        self.objects = objects
        # A simple call, checked but not built yet: the worker builds its one event.
        self.later = later
        self.size = size
        self.parts = len(objects) or 1
        self.failure: Failure | None = None
        self.status: int | None = None
        self.done = False

    def outcome(self) -> Delivery | None:
        """The final Delivery, made when first asked for (after ``settle`` ends the call)."""
        if self._final is None and self.done:
            self._final = _delivery(self)
        return self._final


@attrs.frozen
class Failure:
    """Why some calls failed or were dropped; ``key`` is their ``*_by_reason`` bucket."""

    status: DeliveryStatus
    reason: str
    http_status: int | None
    key: str = attrs.field(
        default=attrs.Factory(lambda self: failure_key(self.http_status), takes_self=True)
    )


class Identify:
    """A profile import waiting in the outbox."""

    __slots__ = ("_body", "entry")
    endpoint = "POST /api/profile-import"

    def __init__(self, entry: Entry, body: bytes) -> None:
        self.entry = entry
        self._body = body

    def body(self) -> bytes:
        """Return the request body."""
        return self._body

    def owners(self) -> list[object]:
        """Return who waits for this request."""
        return [self.entry]


Unit = BulkJob | Identify | SubscriptionJob


class Outcomes:
    """Turns answers into final Deliveries, counters, callbacks and log lines.

    Args:
        stats: The counters to update.
        signal: The Condition the Tickets share.
        on_delivery: The user's callback, or None.
        settled: Called with calls that became final, after their Tickets are resolved.
    """

    def __init__(
        self,
        stats: Counters,
        signal: threading.Condition,
        on_delivery: OnDelivery | None,
        settled: Callable[[Sequence[Entry]], None],
    ) -> None:
        self._stats = stats
        self._signal = signal
        self._on_delivery = on_delivery
        self._settled = settled
        self._lock = threading.Lock()
        self._logged: set[str] = set()

    def accepted(self, unit: Unit, http_status: int) -> None:
        """Klaviyo took the whole request."""
        self.settle(_entries(unit), None, http_status=http_status)

    def refused(self, unit: Unit, exc: APIError) -> BulkJob | SubscriptionJob | None:
        """Klaviyo answered with an error other than 429; return what to send again."""
        if isinstance(unit, (BulkJob, SubscriptionJob)) and exc.status == 400:
            bad = failed_items((err.pointer for err in exc.errors), unit.ITEMS)
            if bad is not None and max(bad) < unit.item_count():
                for index in sorted(bad):
                    reason = _detail_for(exc, unit.ITEMS, index)
                    failure = Failure(DeliveryStatus.FAILED, reason, 400)
                    self.settle(_cast(unit.owners_of(index)), failure)
                self._once(
                    "item",
                    logging.WARNING,
                    "klaviyo-signal: Klaviyo refused some items of a bulk job (HTTP 400); "
                    "the rest is sent again and each refused call's Delivery says why "
                    "(logged once)",
                )
                if len(bad) == unit.item_count():
                    return None  # every item refused: nothing left to send
                return unit.without(bad)
        if isinstance(exc, (AuthenticationError, PermissionDeniedError)):
            # Once per set of scopes: a key may lack the subscription scopes only.
            self._once(f"auth {' '.join(exc.scopes)}", logging.ERROR, "klaviyo-signal: %s", exc)
        else:
            self._once(
                f"http {exc.status}",
                logging.WARNING,
                "klaviyo-signal: Klaviyo answered HTTP %s; the calls in that request failed "
                "(logged once per status)",
                exc.status,
            )
        self.settle(_entries(unit), Failure(DeliveryStatus.FAILED, str(exc), exc.status))
        return None

    def unreachable(self, unit: Unit, exc: TransportError) -> None:
        """No usable answer came back after the transport's retries."""
        self._once("network", logging.WARNING, "klaviyo-signal: %s (logged once)", exc)
        self.settle(_entries(unit), Failure(DeliveryStatus.FAILED, str(exc), None))

    def throttled(self, endpoint: str, pause: float) -> None:
        """Klaviyo answered 429; the endpoint pauses for ``pause`` seconds."""
        self._once(
            f"429 {endpoint}",
            logging.WARNING,
            "klaviyo-signal: Klaviyo answered 429 on %s; pausing it for %.1f s and sending "
            "again (logged once; see client.stats.rate_limited)",
            endpoint,
            pause,
        )

    def settle(
        self,
        entries: Sequence[Entry],
        failure: Failure | None,
        *,
        http_status: int | None = None,
        whole: bool = False,
    ) -> None:
        """Count one part of each entry as done; finish the calls whose parts are all done.

        Args:
            entries: One entry per finished part (an entry may repeat).
            failure: Why these parts failed, or None when delivered.
            http_status: Klaviyo's status for delivered parts.
            whole: Finish each entry now, whatever parts it has left (shutdown).
        """
        finals: list[Entry] = []
        with self._lock:
            for entry in entries:
                if entry.done:
                    continue
                if failure is not None and entry.failure is None:
                    entry.failure = failure
                if http_status is not None:
                    entry.status = http_status
                entry.parts = 0 if whole else entry.parts - 1
                if entry.parts <= 0:
                    entry.done = True
                    finals.append(entry)
        if not finals:
            return
        # Waiters make their Delivery when they wake (Entry.outcome): most calls' final
        # Delivery is never asked for, and making one per event cost the worker.
        Ticket.wake_all(self._signal)
        self._count(finals)
        callback = self._on_delivery
        if callback is not None:
            for entry in finals:
                try:
                    callback(entry.outcome())  # type: ignore[arg-type]
                except Exception:
                    log.exception("klaviyo-signal: the on_delivery callback raised")
        self._settled(finals)

    def _count(self, finals: Sequence[Entry]) -> None:
        by: dict[tuple[str, str | None], int] = {}
        for entry in finals:
            failure = entry.failure
            key = ("delivered", None) if failure is None else (failure.status.value, failure.key)
            by[key] = by.get(key, 0) + 1
        for (status, reason), count in by.items():
            self._stats.outcome(status, reason, count)

    def _once(self, kind: str, level: int, message: str, *args: object) -> None:
        if kind in self._logged:
            return
        self._logged.add(kind)
        log.log(level, message, *args)


def _delivery(entry: Entry) -> Delivery:
    failure = entry.failure
    if failure is None:
        return Delivery(entry.message_id, DeliveryStatus.DELIVERED, None, entry.status)
    return Delivery(entry.message_id, failure.status, failure.reason, failure.http_status)


def _entries(unit: Unit) -> list[Entry]:
    return _cast(unit.owners())


def _cast(owners: Sequence[object]) -> list[Entry]:
    return [owner for owner in owners if isinstance(owner, Entry)]


def _detail_for(exc: APIError, items: str, index: int) -> str:
    """Return Klaviyo's words about one item: the detail of each error that names it."""
    prefix = f"{items}/{index}"
    details = [
        err.detail or err.title or "refused"
        for err in exc.errors
        if err.pointer is not None
        and (err.pointer == prefix or err.pointer.startswith(prefix + "/"))
    ]
    return "; ".join(dict.fromkeys(details)) or "Klaviyo refused this item"
