"""Admission and back-pressure: the caller's side of the background worker's queue.

``submit`` numbers the call, gives it a Ticket and appends it to a deque under a lock:
the blueprint's objects (``submit``), or a simple call's record, one flat tuple
(``submit_record``, ``_blueprint/record``). A call is refused (or, with
``block_on_full``, waits) while the queue holds ``max_queue_size`` calls or
``max_queue_bytes``; a call repeating a queued call's message id is dropped. With a durable
outbox each call is committed to it before it is queued. The room of a call is released
when it becomes final (``settled``), which is also what a waiting ``flush()`` counts.

The worker thread (``_delivery/worker``) takes the calls from ``inbox`` under ``lock``;
building, encoding and HTTP all happen there.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import cast

import attrs

from .._blueprint.record import ITEM_IDENTITY, ITEM_RULE, IdentityKey
from .._blueprint.rules import Rule
from .._errors import APIError, TransportError
from .._klaviyo.json import MEASURE_ABOVE, estimate, request_too_large
from .._klaviyo.limits import MAX_JOB_BYTES, MAX_JOB_EVENTS, MAX_PROFILE_IMPORT_BYTES
from .._klaviyo.models import Event, KlaviyoObject, Profile
from .._klaviyo.transport import SERVER_ERROR_STATUSES
from .._klaviyo.wire import profile_bytes
from .delivery import Board, Ticket
from .jobs import BulkJob, OpenJob, encode_event, encode_queued
from .outbox import Outbox, dump_fields, dump_objects, load
from .outcomes import Outcomes, Unit
from .profile_jobs import ProfileJob
from .stats import DUPLICATE
from .subscription_jobs import SubscriptionJob

__all__ = ["KeepingOutcomes", "Queue"]

log = logging.getLogger("klaviyo_signal")

# A cheap guess at the memory one queued call holds (its objects and properties), for
# max_queue_bytes; exact sizes are only known once the worker encodes.
_BASE_BYTES = 1024
_PROFILE_TEXT = ("first_name", "last_name", "organization", "title", "image", "locale")


class _Names:
    """The message ids of queued calls from the full route, both ways: a call that repeats
    one is dropped (its events would repeat a unique_id). Dicts of strings and ints."""

    __slots__ = ("ids", "seqs")

    def __init__(self) -> None:
        self.seqs: dict[str, int] = {}
        self.ids: dict[int, str] = {}

    def add(self, message_id: str, seq: int) -> None:
        self.seqs[message_id] = seq
        self.ids[seq] = message_id

    def drop(self, seq: int) -> None:
        message_id = self.ids.pop(seq, None)
        if message_id is not None and self.seqs.get(message_id) == seq:
            del self.seqs[message_id]


class KeepingOutcomes(Outcomes):
    """The outcomes of a worker with an outbox: a call that ends without Klaviyo's final
    word on it (Klaviyo unreachable, or a 5xx, after every retry) keeps its outbox row, so
    a later process sends it again; only what Klaviyo accepted or refused leaves the file."""

    keep: Callable[[Unit], None] = staticmethod(lambda unit: None)

    def refused(self, unit: Unit, exc: APIError) -> BulkJob | SubscriptionJob | ProfileJob | None:
        if exc.status in SERVER_ERROR_STATUSES or exc.transient:
            self.keep(unit)
        return super().refused(unit, exc)

    def unreachable(self, unit: Unit, exc: TransportError) -> None:
        self.keep(unit)
        super().unreachable(unit, exc)


def _duplicate(message_id: str) -> str:
    shown = message_id if len(message_id) <= 80 else message_id[:77] + "..."
    return (
        f"{DUPLICATE}: a call with message_id {shown!r} is already queued (its events carry "
        "that unique_id, and Klaviyo refuses a job that repeats one)"
    )


def _profile_size(profile: Profile) -> int:
    size = estimate(profile.properties) if profile.properties else 0
    if profile.location is not None:
        size += sum(len(str(v)) for v in attrs.astuple(profile.location) if v is not None)
    for name in _PROFILE_TEXT:
        value = getattr(profile, name)
        if value is not None:
            size += len(value)
    return size


def _estimate(objects: Sequence[KlaviyoObject]) -> int:
    # Measured on what the blueprint kept (usually a few properties), not on the input;
    # strings count by length so a 100 kB value cannot slip under max_queue_bytes.
    size = _BASE_BYTES * len(objects)
    for obj in objects:
        if type(obj) is Event:
            size += estimate(obj.properties) + _profile_size(obj.profile)
        elif type(obj) is Profile:
            size += _profile_size(obj)
    return size


def _check_fits(objects: Sequence[KlaviyoObject], event: tuple[bytes, IdentityKey] | None) -> None:
    """Raise ValidationError, on the caller's thread, for an event or a profile import that
    cannot fit one request alone: the worker could only fail it later.

    Args:
        objects: A decided call's objects.
        event: A simple call's encoded event (``encode_queued``) and its profile's identifiers.
    """
    events: list[tuple[bytes, Profile | IdentityKey]] = [] if event is None else [event]
    for obj in objects:
        if type(obj) is Event:
            events.append((encode_event(obj), obj.profile))
        elif type(obj) is Profile:
            body = profile_bytes(obj)
            if len(body) > MAX_PROFILE_IMPORT_BYTES:
                raise request_too_large(len(body), MAX_PROFILE_IMPORT_BYTES, "the profile import")
    for data, profile in events:
        if not OpenJob().add(data, profile, None, 0.0):  # as the worker adds it, alone
            raise request_too_large(len(data), MAX_JOB_BYTES, "the event")


class Queue:
    """The calls queued for one worker, the room they take, and the flushes waiting for them.

    Args:
        board: Where the Tickets of this client learn their outcomes.
        rule_for: The blueprint's ``rule_for``: the rule of a queued record.
        max_queue_size: Calls queued or in flight before new ones are refused.
        max_queue_bytes: Estimated bytes those calls may hold before new ones are refused.
        block_on_full: Wait for room instead of refusing a call.
        outbox: The durable outbox, or None: memory only.
        wake: Wakes the worker thread.
        start: Starts the worker thread (at the first call).
    """

    def __init__(
        self,
        *,
        board: Board,
        rule_for: Callable[[tuple[str, str]], Rule],
        max_queue_size: int,
        max_queue_bytes: int,
        block_on_full: bool,
        outbox: Outbox | None,
        wake: threading.Event,
        start: Callable[[], None],
    ) -> None:
        self._board = board
        self._rule_for = rule_for
        self._max_size = max_queue_size
        self._max_bytes = max_queue_bytes
        self._block = block_on_full
        self._wake = wake
        self._start = start
        # One lock for the queue and the worker thread's bookkeeping (the worker takes it).
        self.lock = threading.Lock()
        self._drained = threading.Condition(self.lock)
        self.space = threading.Condition(self.lock)
        # (seq, the call's objects), or (seq, (), *a simple call's record).
        self.inbox: deque[tuple[object, ...]] = deque()
        # The Outcomes' own dicts (the worker hands them over): every call not final yet,
        # and the parts left of calls of several parts.
        self.calls: dict[int, tuple[str, int]] = {}
        self.parts: dict[int, int] = {}
        self._named = _Names()
        self._seq = itertools.count()
        self.pending = 0
        """Calls queued or in flight."""
        self.pending_bytes = 0
        """The estimated bytes those calls hold."""
        self.arrivals = 0  # calls ever queued; the thread compares it with what it saw
        # What each waiting flush() still waits for: the calls queued before it was called.
        self._flushes: list[set[int]] = []
        # Calls ever taken from the queue, and how many a flush() wants taken and sealed.
        self.taken = 0
        self.flush_mark = 0
        self._waiting_for_space = 0
        self._calling = 0  # batches of final calls whose on_delivery callbacks are running
        self.idle = True  # the worker thread sleeps with nothing to do: the next call wakes it
        self.closed = False
        self.thread: threading.Thread | None = None  # the worker thread, once started
        self.outbox = outbox
        # The outbox row of each call not final yet (sequence number -> row id).
        self.rows: dict[int, int] = {}

    def submit(self, message_id: str, objects: Sequence[KlaviyoObject]) -> Ticket | str:
        """Queue one decided call's objects; return its Ticket, or why it was refused."""
        size = _estimate(objects)
        if size > MEASURE_ABOVE:
            _check_fits(objects, None)
        return self._enqueue(message_id, size, objects, None, named=True)

    def submit_record(
        self, message_id: str, record: tuple[object, ...], size: int, named: bool = False
    ) -> Ticket | str:
        """Queue a simple call's record (``_blueprint/record``), from the fast lane or
        ``CompiledBlueprint.prepare``; return its Ticket, or why it was refused.

        Args:
            message_id: The call's id.
            record: The call's fields.
            size: What its properties count against ``max_queue_bytes``.
            named: Whether the caller gave the message id (it may repeat a queued call's).

        Raises:
            ValidationError: The event cannot fit one request alone.
        """
        size += _BASE_BYTES
        if size > MEASURE_ABOVE:
            item = (0, (), *record)
            data = encode_queued(item, self._rule_for(item[ITEM_RULE]))  # type: ignore[arg-type]
            _check_fits((), (data, item[ITEM_IDENTITY]))  # type: ignore[arg-type]
        return self._enqueue(message_id, size, (), record, named=named)

    def _enqueue(
        self,
        message_id: str,
        size: int,
        objects: Sequence[KlaviyoObject],
        fields: tuple[object, ...] | None,
        *,
        named: bool = False,
        row: int | None = None,
    ) -> Ticket | str:
        """Queue one call; ``named``: its message id may repeat a queued call's (a caller's
        own), not one the fast lane made up; ``row``: its outbox row, written already."""
        if size > self._max_bytes:
            return "call larger than max_queue_bytes"
        if self.outbox is not None and row is None:
            return self._enqueue_durable(message_id, size, objects, fields, named)
        # Numbered and ticketed before taking the lock (next() on a count is atomic): the
        # lock is held only for the bookkeeping. The Ticket is registered before the call
        # is queued, so its outcome cannot be missed; a refused call's Ticket is dropped.
        seq = next(self._seq)
        ticket = Ticket(self._board, seq, message_id)
        item = (seq, objects) if fields is None else (seq, (), *fields)
        with self.lock:
            if self.closed:
                return "client is closed"
            if named and message_id in self._named.seqs:
                return _duplicate(message_id)
            if self.pending >= self._max_size or self.pending_bytes + size > self._max_bytes:
                # On the worker thread (an on_delivery callback) no room can come while
                # the call waits: only this thread frees it.
                if not self._block or threading.current_thread() is self.thread:
                    return "queue full"
                if not self._wait_for_space(size):
                    return "client is closed"
            self._admit(seq, message_id, size, row, named, len(objects), item)
            # Wake the thread only when it sleeps with nothing to do, or a job's worth
            # waits: an Event.set() per call would cost the caller more than the rest.
            wake = self.idle or len(self.inbox) == MAX_JOB_EVENTS
            self.idle = False
            start = self.thread is None
        if start:
            self._start()
        if wake:
            self._wake.set()
        return ticket

    def _enqueue_durable(
        self,
        message_id: str,
        size: int,
        objects: Sequence[KlaviyoObject],
        fields: tuple[object, ...] | None,
        named: bool,
    ) -> Ticket | str:
        """Commit one call to the outbox, then queue it; a refused call's row is deleted."""
        outbox = cast(Outbox, self.outbox)
        # Read without the lock: a call that would be refused costs no write (the queue
        # decides again, under its lock).
        if self.closed:
            return "client is closed"
        if not self._block and (
            self.pending >= self._max_size or self.pending_bytes + size > self._max_bytes
        ):
            return "queue full"
        if named and message_id in self._named.seqs:
            return _duplicate(message_id)
        if fields is None:
            record = dump_objects(message_id, size, named, objects)
        else:
            record = dump_fields(message_id, size, named, fields)
        try:
            row = outbox.add(record)
        except sqlite3.Error as exc:  # logged by the outbox, once
            return f"outbox write failed: {exc}"
        ticket = self._enqueue(message_id, size, objects, fields, named=named, row=row)
        if isinstance(ticket, str):
            outbox.remove([row])
        return ticket

    def keep_rows(self, unit: Unit) -> None:
        """Leave the rows of ``unit``'s calls in the outbox when they end now."""
        for seq in unit.owners():
            if isinstance(seq, int):
                self.rows.pop(seq, None)

    def _admit(  # noqa: PLR0917 - positional: the caller's hot path
        self,
        seq: int,
        message_id: str,
        size: int,
        row: int | None,
        named: bool,
        parts: int,
        item: tuple[object, ...],
    ) -> None:
        """Count one call in and append it to the inbox (the lock is held)."""
        self.calls[seq] = (message_id, size)
        if row is not None:
            self.rows[seq] = row
        if named:
            self._named.add(message_id, seq)
        if parts > 1:
            self.parts[seq] = parts
        self.pending += 1
        self.arrivals += 1
        self.pending_bytes += size
        self.inbox.append(item)

    def replay(self, outbox: Outbox) -> None:
        """Queue the calls earlier processes left in the outbox (start-up; no Delivery
        waits for them: they count in the stats and reach ``on_delivery``)."""
        rows = outbox.adopt()
        if not rows:
            return
        unreadable: list[int] = []
        with self.lock:
            for row, data in rows:
                try:
                    message_id, size, named, objects, fields = load(data)
                except ValueError:
                    unreadable.append(row)
                    continue
                seq = next(self._seq)
                item = (seq, objects) if fields is None else (seq, (), *fields)
                self._admit(seq, message_id, size, row, named, len(objects), item)
            self.idle = False
            replayed = self.pending
        if unreadable:
            log.error(
                "klaviyo-signal: %d record(s) of outbox %r could not be read and were removed",
                len(unreadable),
                outbox.path,
            )
            outbox.remove(unreadable)
        if replayed:
            log.warning(
                "klaviyo-signal: sending %d call(s) an earlier process left in outbox %r",
                replayed,
                outbox.path,
            )
            self._start()
            self._wake.set()

    def _wait_for_space(self, size: int) -> bool:
        """Block (holding the Condition) until a call of ``size`` fits; False if closed."""
        self._waiting_for_space += 1
        try:
            while not self.closed and (
                self.pending >= self._max_size or self.pending_bytes + size > self._max_bytes
            ):
                self.space.wait(0.5)
        finally:
            self._waiting_for_space -= 1
        return not self.closed

    def flush(self, timeout: float | None) -> bool:
        """Send everything queued now; False if ``timeout`` seconds pass first.

        It waits for the calls queued before it only, so it returns under steady traffic,
        and the worker seals the jobs holding those calls once (see ``Worker._loop``). On the
        worker thread (from on_delivery) it returns at once, False if anything is queued:
        only this thread sends, so waiting could only end in the timeout.
        """
        if threading.current_thread() is self.thread:
            return self.pending == 0
        with self.lock:
            if self.pending == 0 and self._calling == 0:
                return True
            waiting = set(self.calls)
            self._flushes.append(waiting)
            self.flush_mark = max(self.flush_mark, self.arrivals)
            self.idle = False
        self._wake.set()
        try:
            with self.lock:
                return self._drained.wait_for(lambda: not waiting and self._calling == 0, timeout)
        finally:
            with self.lock:
                self._flushes = [other for other in self._flushes if other is not waiting]

    def settled(self, finals: Sequence[tuple[int, int]], calling: bool = False) -> None:
        """Release the queue room of calls that just became final (called by Outcomes).

        With ``calling``, their on_delivery callbacks run next: a flush waits for them
        (until ``called``), so the callbacks of every call have run when it returns.
        With an outbox, their rows are deleted first (the worker's ``_abandon`` takes the rows of
        the calls it ends out of ``rows`` first: those calls are sent by a later process).
        """
        if self.rows:
            pop = self.rows.pop
            rows = [row for seq, _ in finals if (row := pop(seq, None)) is not None]
            cast(Outbox, self.outbox).remove(rows)
        with self.lock:
            named = self._named
            for seq, size in finals:
                self.pending -= 1
                self.pending_bytes -= size
                if named.ids:
                    named.drop(seq)
            self._calling += calling
            if self._waiting_for_space:
                self.space.notify_all()
            flushed = False
            for waiting in self._flushes:
                for seq, _ in finals:
                    waiting.discard(seq)
                flushed = flushed or not waiting
            if (flushed or self.pending == 0) and self._calling == 0:
                self._drained.notify_all()

    def called(self) -> None:
        """The callbacks announced to ``settled`` have run."""
        with self.lock:
            self._calling -= 1
            if self._calling == 0:
                self._drained.notify_all()
