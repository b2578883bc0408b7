"""What Klaviyo's answer to a background request means for each call in it.

A 2xx delivers every call in the request. A 400 whose error pointers name bulk items fails
only the calls of those items (their Delivery carries Klaviyo's ``detail``), or, when a
pointer names one event inside an item, only that event's call, and hands back the rest
of the job to send again; any other 4xx, or no usable answer after the
transport's retries, fails them all. Problems are logged once per kind, with no event
data and no key. Every call ends exactly once: the worker's answers and the shutdown
sweep race for the same calls, and only the first to settle one counts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence

import attrs

from .._errors import (
    APIError,
    AuthenticationError,
    PermissionDeniedError,
    TransportError,
    UnexpectedResponseError,
)
from .delivery import Board, Delivery, DeliveryStatus, Final, OnDelivery
from .jobs import BulkJob, failed_parts
from .profile_jobs import Poll, ProfileJob
from .stats import Counters, failure_key
from .subscription_jobs import SubscriptionJob

__all__ = ["CLIENT_PROFILES", "PROFILE_IMPORT", "Failure", "Identify", "Outcomes", "Unit"]

log = logging.getLogger("klaviyo_signal")

_SLICE = 250  # calls settled at a time (see Outcomes.accepted)


@attrs.frozen
class Failure:
    """Why some calls failed or were dropped; ``key`` is their ``*_by_reason`` bucket."""

    status: DeliveryStatus
    reason: str
    http_status: int | None
    key: str = attrs.field(
        default=attrs.Factory(lambda self: failure_key(self.http_status), takes_self=True)
    )


PROFILE_IMPORT = "POST /api/profile-import"
CLIENT_PROFILES = "POST /client/profiles"


class Identify:
    """A profile import (or a client-side profile link) waiting in the outbox.

    ``waits``: outbox -> the order of the last unit there it must follow, besides the one
    its outbox entry names (a profile job that became profile imports keeps its own).
    """

    __slots__ = ("_body", "endpoint", "owner", "waits")

    def __init__(
        self,
        owner: int,
        body: bytes,
        endpoint: str = PROFILE_IMPORT,
        waits: dict[str, int] | None = None,
    ) -> None:
        self.owner = owner
        self._body = body
        self.endpoint = endpoint
        self.waits = waits

    def body(self) -> bytes:
        """Return the request body."""
        return self._body

    def owners(self) -> list[object]:
        """Return who waits for this request."""
        return [self.owner]


Unit = BulkJob | Identify | SubscriptionJob | ProfileJob | Poll


class Outcomes:
    """Turns answers into final Deliveries, counters, callbacks and log lines.

    A queued call is a sequence number here (``calls``: its message id and queue bytes),
    with the few calls of several parts (an identify and its subscription, an order and
    its line items) counted in ``parts``: plain dicts of numbers and strings (see
    ``_blueprint/record`` for why nothing per queued call is an object).

    Args:
        stats: The counters to update.
        board: Where waiting Deliveries learn their outcome.
        on_delivery: The user's callback, or None.
        settled: Called with the (sequence number, bytes) of calls that became final,
            before their callbacks run, and whether callbacks follow.
        between: Called between the slices of a large accepted job (see ``accepted``).
        called: Called when the callbacks announced to ``settled`` have run.
    """

    def __init__(
        self,
        stats: Counters,
        board: Board,
        on_delivery: OnDelivery | None,
        settled: Callable[[Sequence[tuple[int, int]], bool], None],
        between: Callable[[], object] = lambda: None,
        *,
        called: Callable[[], None] = lambda: None,
    ) -> None:
        self._between = between
        self._called = called
        self._stats = stats
        self._board = board
        self._on_delivery = on_delivery
        self._settled = settled
        self._lock = threading.Lock()
        self._logged: set[str] = set()
        self.calls: dict[int, tuple[str, int]] = {}
        """Every call not final yet: sequence number -> (message_id, estimated bytes)."""
        self.parts: dict[int, int] = {}
        """Parts left, for calls of more than one part."""
        self._failures: dict[int, Failure] = {}
        self._statuses: dict[int, int] = {}

    def accepted(self, unit: Unit, http_status: int) -> None:
        """Klaviyo took the whole request.

        Every call of the job becomes final at once; their callbacks, counters and queue
        room follow in slices with ``between()`` in between, so the worker can step aside
        for calling threads instead of holding the GIL for a whole job's worth.
        """
        self.settle(_calls(unit.owners()), None, http_status=http_status, sliced=True)

    def refused(self, unit: Unit, exc: APIError) -> BulkJob | SubscriptionJob | ProfileJob | None:
        """Klaviyo answered with an error other than 429; return what to send again."""
        if isinstance(unit, (BulkJob, SubscriptionJob, ProfileJob)) and exc.status == 400:
            parts = unit.PARTS if isinstance(unit, BulkJob) else None
            bad = failed_parts((err.pointer for err in exc.errors), unit.ITEMS, parts)
            if bad is not None and _within(unit, bad):
                for index in sorted(bad):
                    item = f"{unit.ITEMS}/{index}"
                    named = bad[index]
                    if named is None:
                        failure = Failure(DeliveryStatus.FAILED, _detail_for(exc, item), 400)
                        self.settle(_calls(unit.owners_of(index)), failure)
                        continue
                    # Only the events an error names fail; the item's others go again.
                    owners = unit.owners_of(index)
                    for event in sorted(named):
                        reason = _detail_for(exc, f"{item}{parts}/{event}")
                        failure = Failure(DeliveryStatus.FAILED, reason, 400)
                        self.settle(_calls([owners[event]]), failure)
                self._once(
                    "item",
                    logging.WARNING,
                    "klaviyo-signal: Klaviyo refused some items of a bulk job (HTTP 400); "
                    "the rest is sent again and each refused call's Delivery says why "
                    "(logged once)",
                )
                whole = [index for index, named in bad.items() if named is None]
                if len(whole) == unit.item_count():
                    return None  # every item refused: nothing left to send
                if isinstance(unit, (SubscriptionJob, ProfileJob)):
                    return unit.without(whole)
                rest = unit.without(whole, {i: set(n) for i, n in bad.items() if n is not None})
                return rest if rest.item_count() else None
        if isinstance(exc, (AuthenticationError, PermissionDeniedError, UnexpectedResponseError)):
            # Once per kind and set of scopes: a key may lack the subscription scopes only.
            once = f"{type(exc).__name__} {' '.join(exc.scopes)}"
            self._once(once, logging.ERROR, "klaviyo-signal: %s", exc)
        else:
            self._once(
                f"http {exc.status}",
                logging.WARNING,
                "klaviyo-signal: Klaviyo answered HTTP %s; the calls in that request failed "
                "(logged once per status)",
                exc.status,
            )
        self.settle(_calls(unit.owners()), Failure(DeliveryStatus.FAILED, str(exc), exc.status))
        return None

    def unreachable(self, unit: Unit, exc: TransportError) -> None:
        """No usable answer came back after the transport's retries."""
        self._once("network", logging.WARNING, "klaviyo-signal: %s (logged once)", exc)
        failure = Failure(DeliveryStatus.FAILED, str(exc), None, failure_key(None, exc))
        self.settle(_calls(unit.owners()), failure)

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
        seqs: Sequence[int],
        failure: Failure | None,
        *,
        http_status: int | None = None,
        whole: bool = False,
        sliced: bool = False,
    ) -> None:
        """Count one part of each call as done; finish the calls whose parts are all done.

        Args:
            seqs: One sequence number per finished part (a call may repeat).
            failure: Why these parts failed, or None when delivered.
            http_status: Klaviyo's status for delivered parts.
            whole: Finish each call now, whatever parts it has left (shutdown).
            sliced: Run the callbacks and release the queue room in slices (see
                ``accepted``); the calls themselves are all final before the first one.
        """
        with self._lock:
            finals = self._finals(seqs, failure, http_status, whole=whole)
        if not finals:
            return
        self._board.post([(seq, final) for seq, _, _, final, _ in finals])
        step = _SLICE if sliced else len(finals)
        for start in range(0, len(finals), step):
            if start:
                self._between()
            part = finals[start : start + step]
            self._count([(final[0], key) for _, _, _, final, key in part])
            callback = self._on_delivery
            # Room first: a callback that queues a call must find the room these calls
            # held, since only this thread can free any (see Queue._enqueue).
            self._settled([(seq, size) for seq, _, size, _, _ in part], callback is not None)
            if callback is not None:
                try:
                    for _, message_id, _, final, _ in part:
                        try:
                            callback(Delivery(message_id, *final))
                        except Exception:
                            log.exception("klaviyo-signal: the on_delivery callback raised")
                finally:
                    self._called()

    def _finals(
        self, seqs: Sequence[int], failure: Failure | None, http_status: int | None, *, whole: bool
    ) -> list[tuple[int, str, int, Final, str | None]]:
        """Count the parts done; return (seq, message id, bytes, final, reason key) of each
        call that is final now. The caller holds the lock."""
        if (
            failure is None
            and http_status is not None
            and not (self.parts or self._failures or self._statuses)
        ):
            # The common case, a job accepted whole, in one pass: no call has parts left,
            # so each one ends delivered with this status.
            delivered = (DeliveryStatus.DELIVERED, None, http_status)
            pop = self.calls.pop
            return [
                (seq, info[0], info[1], delivered, None)
                for seq in seqs
                if (info := pop(seq, None)) is not None
            ]
        finals: list[tuple[int, str, int, Final, str | None]] = []
        for seq in seqs:
            info = self.calls.get(seq)
            if info is None:
                continue  # final already: the shutdown sweep and an answer raced
            left = self.parts.get(seq)
            if left is not None:
                if left > 1 and not whole:
                    self.parts[seq] = left - 1
                    if failure is not None:
                        self._failures.setdefault(seq, failure)  # the first one wins
                    if http_status is not None:
                        self._statuses[seq] = http_status
                    continue
                del self.parts[seq]
            del self.calls[seq]
            first = self._failures.pop(seq, None) or failure
            earlier = self._statuses.pop(seq, None)
            status = http_status if http_status is not None else earlier
            key = None if first is None else first.key
            finals.append((seq, info[0], info[1], _final(first, status), key))
        return finals

    def _count(self, finals: Iterable[tuple[DeliveryStatus, str | None]]) -> None:
        by: dict[tuple[str, str | None], int] = {}
        for status, key in finals:
            pair = (status.value, key)
            by[pair] = by.get(pair, 0) + 1
        for (status_name, reason_key), count in by.items():
            self._stats.outcome(status_name, reason_key, count)

    def once(self, kind: str, level: int, message: str, *args: object) -> None:
        """Log ``message`` the first time something of ``kind`` happens, never again."""
        self._once(kind, level, message, *args)

    def _once(self, kind: str, level: int, message: str, *args: object) -> None:
        if kind in self._logged:
            return
        self._logged.add(kind)
        log.log(level, message, *args)


def _final(failure: Failure | None, http_status: int | None) -> Final:
    if failure is None:
        return (DeliveryStatus.DELIVERED, None, http_status)
    return (failure.status, failure.reason, failure.http_status)


def _calls(owners: Sequence[object]) -> list[int]:
    return [owner for owner in owners if type(owner) is int]


def _within(unit: BulkJob | SubscriptionJob | ProfileJob, bad: dict[int, set[int] | None]) -> bool:
    """Whether every item and event the errors name is in ``unit`` (else it all failed)."""
    count = unit.item_count()
    for index, named in bad.items():
        if index >= count or (named and max(named) >= len(unit.owners_of(index))):
            return False
    return True


def _detail_for(exc: APIError, prefix: str) -> str:
    """Return Klaviyo's words about one item or event: the detail of each error naming it."""
    details = [
        err.detail or err.title or "refused"
        for err in exc.errors
        if err.pointer is not None
        and (err.pointer == prefix or err.pointer.startswith(prefix + "/"))
    ]
    return "; ".join(dict.fromkeys(details)) or "Klaviyo refused this item"
