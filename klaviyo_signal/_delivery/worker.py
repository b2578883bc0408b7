"""The background worker: a bounded queue, and one thread that batches, paces and sends.

The caller's side (``submit``) numbers the call, gives it a Ticket and appends it to a
deque under a lock: the blueprint's objects, or a simple call's checked ``Pending`` packed
into one flat tuple (which the garbage collector stops visiting at once). Building,
encoding, grouping and HTTP all happen on the worker thread. The thread takes queued
calls in chunks, encodes their events into the open bulk job (``_delivery/jobs``) and their
subscriptions into the open job of their list (``_delivery/subscription_jobs``), seals a job when
it is full, when its oldest call is ``flush_interval`` old, or on ``flush()``/``close()``
(once, for the jobs holding the calls queued before it), and sends sealed jobs and profile
imports one request at a time, each when its endpoint's limiter (``_delivery/ratelimit``) allows.
What an answer means for each call is ``_delivery/outcomes``' business.

Ordering. Each endpoint has an outbox of its own (all subscription jobs share one), so a
429 or a server error on one endpoint pauses that outbox only. Each outbox is sent in
order; the next request is the oldest first unit of any outbox that may go. Across
outboxes only one person's identify and events are ordered: an identify waits for the
event jobs holding that person's earlier events, and an event job holding a later event
of a person whose identify still waits waits for that identify (and, being first in
its outbox, holds back the event jobs behind it until then).

Nothing starts before the first call (with an outbox, before the calls an earlier process
left in it: ``_delivery/outbox``), and ``close()`` leaves no thread behind.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import random
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Protocol, cast

import attrs

from .._blueprint.events import Pending, pack
from .._blueprint.record import ITEM_IDENTITY, ITEM_RULE, ITEM_UNIQUE_ID, IdentityKey
from .._blueprint.rules import Rule
from .._calls.identity import Identity
from .._errors import (
    APIError,
    BlockedByEdgeError,
    KlaviyoSignalError,
    PermissionDeniedError,
    TransportError,
)
from .._klaviyo.json import (
    BYTES_PER_VALUE,
    MAX_PROFILE_IMPORT_BYTES,
    MEASURE_ABOVE,
    request_too_large,
)
from .._klaviyo.models import ClientProfile, Event, KlaviyoObject, Profile
from .._klaviyo.transport import SERVER_ERROR_STATUSES, Answer, KlaviyoAPI
from .._klaviyo.wire import profile_bytes
from . import profile_jobs
from .delivery import Board, DeliveryStatus, OnDelivery, Ticket
from .jobs import (
    MAX_JOB_BYTES,
    MAX_JOB_EVENTS,
    BulkJob,
    OpenJob,
    encode_event,
    encode_queued,
    unique_key,
)
from .lifecycle import adopt, release, starting_thread
from .outbox import Outbox, dump_fields, dump_objects, load
from .outcomes import CLIENT_PROFILES, PROFILE_IMPORT, Failure, Identify, Outcomes, Unit
from .profile_jobs import (
    IMPORT_ERRORS,
    JOB_STATUS,
    PROFILE_JOBS,
    OpenProfiles,
    Pair,
    Poll,
    ProfileJob,
    job_of,
    pairs_of,
)
from .ratelimit import EndpointLimiter, RateLimits
from .ratestore import RateStore
from .sender import Sender, Sent
from .stats import Counters
from .subscription_jobs import SubscriptionJob, SubscriptionJobs

__all__ = ["DUPLICATE", "Worker"]

log = logging.getLogger("klaviyo_signal")

# Calls taken from the queue per lock acquisition (the lock is only for the bookkeeping;
# how long the worker runs before it lets other threads in is _SLICE's business).
_CHUNK = 50
# The longest the worker thread runs Python before it lets other threads have the GIL,
# whatever the call or job. CPython hands the GIL over only when its holder releases it
# or when a waiting thread has waited out the switch interval (5 ms), so a calling thread
# that wants it back otherwise waits that long inside its call.
_SLICE = 0.0002
# How long the worker sleeps at the end of a slice: it releases the GIL, and a thread
# waiting for it (woken by the release) gets it before the worker wakes up.
_YIELD = 0.0001
# Callers count as active this long after a call was queued: meanwhile the worker yields
# at the end of every slice. Deciding by "calls since the last slice" fails exactly when
# a caller could not run (descheduled, or it lost the race for the GIL to the worker
# waking from its pause): the worker then ran whole chunks without releasing the GIL,
# and the caller, back in its call, waited out the switch interval.
_ACTIVE = 0.02
# While a request is in flight, the worker yields at least this often, so the sender gets
# the GIL within two milliseconds when its answer comes.
_SENDER_TURN = 0.002
# After an internal error the worker carries on after this pause (a bug that repeats on
# every turn of the loop must not spin).
_RECOVERY_PAUSE = 0.05
# A cheap guess at the memory one queued call holds (its objects and properties), for
# max_queue_bytes; exact sizes are only known once the worker encodes.
_BASE_BYTES = 1024
_PROFILE_TEXT = ("first_name", "last_name", "organization", "title", "image", "locale")
_JOIN_GRACE = 1.0
_MAX_BACKOFF = 30.0
# The shortest timeout a request sent during close() gets, so it can still connect.
_MIN_TIMEOUT = 0.5
_SHUTDOWN_REASON = "shutdown: not sent before the client closed (shutdown_timeout passed)"
_SHUTDOWN = Failure(DeliveryStatus.DROPPED, _SHUTDOWN_REASON, None, "shutdown")
_IN_FLIGHT_REASON = (
    "shutdown: the request was still in flight when shutdown_timeout passed; Klaviyo may "
    "have received it (sending it again with the same message_id is safe)"
)
_IN_FLIGHT = Failure(DeliveryStatus.FAILED, _IN_FLIGHT_REASON, None, "shutdown")
_BROKEN_REASON = "internal error in the delivery worker (see the klaviyo_signal log)"
_BROKEN = Failure(DeliveryStatus.FAILED, _BROKEN_REASON, None, "internal error")
# Subscribe and unsubscribe jobs share one outbox, so one person's consent changes keep
# the order they were made in across the two endpoints.
_SUBSCRIPTIONS = "subscriptions"
# The outbox name of a wait for a profile job to be imported (not only sent): see _ready.
_IMPORTED = "imported"
_BROKEN_IN_FLIGHT = Failure(
    DeliveryStatus.FAILED,
    "internal error in the delivery worker while the request was in flight; Klaviyo may "
    "have received it (sending it again with the same message_id is safe)",
    None,
    "internal error",
)


class _Names:
    """The message ids of queued calls from the full route, both ways: a call that repeats
    one is dropped (its events would repeat a unique_id). Dicts of strings and ints, which
    the garbage collector does not track."""

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


class _KeepingOutcomes(Outcomes):
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


DUPLICATE = "duplicate"
"""The ``dropped_by_reason`` key of a call whose message id a queued call has."""


def _duplicate(message_id: str) -> str:
    shown = message_id if len(message_id) <= 80 else message_id[:77] + "..."
    return (
        f"{DUPLICATE}: a call with message_id {shown!r} is already queued (its events carry "
        "that unique_id, and Klaviyo refuses a job that repeats one)"
    )


class _Batches(Protocol):
    """Calls waiting to fill a job: the one seam every kind of bulk job is sealed through."""

    @property
    def oldest(self) -> float | None:
        """When the oldest waiting call was queued, or None when none waits."""

    def due(self, cutoff: float | None) -> Sequence[Unit]:
        """Seal and return the jobs whose oldest call was queued at ``cutoff`` or before."""


def _outbox_of(unit: Unit) -> str:
    """Return the outbox a unit waits in: its endpoint's, one for all subscription jobs."""
    return _SUBSCRIPTIONS if type(unit) is SubscriptionJob else unit.endpoint


def _size(value: object) -> int:
    """Roughly the bytes a cleaned JSON value holds: strings by length, others flat."""
    # Runs on the caller's thread for every call: plain loops, no generators.
    if type(value) is str:
        return BYTES_PER_VALUE + len(value)
    size = BYTES_PER_VALUE
    if type(value) is dict or type(value) is MappingProxyType or isinstance(value, Mapping):
        for key, item in value.items():
            kind = type(item)
            if kind is str:
                size += BYTES_PER_VALUE + len(key) + len(item)
            elif kind is int or kind is float or kind is bool or item is None:
                size += BYTES_PER_VALUE + len(key)
            else:
                size += len(key) + _size(item)
    elif type(value) is list:
        for item in value:
            size += BYTES_PER_VALUE + len(item) if type(item) is str else _size(item)
    return size


def _profile_size(profile: Profile) -> int:
    size = _size(profile.properties) if profile.properties else 0
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
            size += _size(obj.properties) + _profile_size(obj.profile)
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


def _lacks_scope(exc: APIError) -> bool:
    """Whether Klaviyo itself refused the key (a 403 from its API, not from its edge)."""
    return isinstance(exc, PermissionDeniedError) and not isinstance(exc, BlockedByEdgeError)


def _seqs(owners: Iterable[object]) -> list[int]:
    return [owner for owner in owners if type(owner) is int]


class Worker:
    """Queues calls and sends them from one background thread.

    Args:
        make_transport: Builds the worker's HTTP transport (on the worker thread, lazily).
        limits: Per-endpoint (burst per second, steady per minute), or None for no
            client-side limit.
        rule_for: The blueprint's ``rule_for``: the rule of a queued ``Pending`` call.
        stats: The counters to update.
        board: Where the Tickets of this client learn their outcomes.
        on_delivery: Called with every final Delivery, on the worker thread.
        flush_interval: Seconds the oldest queued event may wait for its job to fill.
        max_queue_size: Calls queued or in flight before new ones are refused.
        max_queue_bytes: Estimated bytes those calls may hold before new ones are refused.
        block_on_full: Wait for room instead of refusing a call.
        max_retries: Attempts after a 5xx or an unanswered request before a call fails.
        answer_timeout: The longest any request waits for its answer, so ``close()``
            ends the thread within the shutdown timeout plus this.
        clock: Monotonic seconds (tests may pass another).
        rate_store: Where every process of the account shares each endpoint's budget
            (``rate_limit_store``); None: this worker paces alone.
        outbox: The durable outbox (``_delivery/outbox``): each call is committed to it
            before it is queued and deleted once Klaviyo has answered it; the calls an
            earlier process left in it are queued at once. None: memory only.
        profile_jobs: Send identifies through bulk profile import jobs (the revision
            has its schema), polling each job until Klaviyo has imported it.
    """

    def __init__(  # noqa: PLR0915 - one assignment per piece of state, documented here
        self,
        *,
        make_transport: Callable[[], KlaviyoAPI],
        limits: RateLimits | None,
        rule_for: Callable[[tuple[str, str]], Rule],
        stats: Counters,
        board: Board,
        on_delivery: OnDelivery | None,
        flush_interval: float,
        max_queue_size: int,
        max_queue_bytes: int,
        block_on_full: bool,
        max_retries: int = 5,
        answer_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        rate_store: RateStore | None = None,
        outbox: Outbox | None = None,
        profile_jobs: bool = False,
    ) -> None:
        self._rate_store = rate_store
        self._make_transport = make_transport
        self._transport: KlaviyoAPI | None = None
        self._board = board
        self._interval = flush_interval
        self._max_size = max_queue_size
        self._max_bytes = max_queue_bytes
        self._block = block_on_full
        self._max_retries = max_retries
        self._answer_timeout = answer_timeout
        self._clock = clock
        self._limits = limits
        self._rule_for = rule_for
        self._outcomes = (Outcomes if outbox is None else _KeepingOutcomes)(
            stats, board, on_delivery, self._settled, self._step_aside, called=self._called
        )
        self._stats = stats
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._space = threading.Condition(self._lock)
        self._wake = threading.Event()
        # (sequence number, the call's objects), or a Pending call flattened by ``pack``.
        self._inbox: deque[tuple[object, ...]] = deque()
        self._calls = self._outcomes.calls
        self._named = _Names()
        self._seq = itertools.count()
        self._pending = 0
        self._arrivals = 0  # calls ever queued; the thread compares it with what it saw
        self._seen = 0
        # When the worker's current slice began (perf_counter), and until when callers
        # count as active (see _turn).
        self._slice = 0.0
        self._active_until = 0.0
        self._bytes = 0
        # What each waiting flush() still waits for: the calls queued before it was called.
        self._flushes: list[set[int]] = []
        # Calls ever taken from the queue, and how many a flush() wants taken and sealed.
        self._taken = 0
        self._flush_mark = 0
        self._waiting_for_space = 0
        self._calling = 0  # batches of final calls whose on_delivery callbacks are running
        self._idle = True
        self._closed = False
        self._stop = False
        # Set in a forked child, where this worker is the parent's (see ``forsake``).
        self._forsaken = False
        self._detached = False
        self._thread: threading.Thread | None = None
        # Owned by the worker thread only.
        self._open = OpenJob()
        self._subscriptions = SubscriptionJobs()
        # Sealed units by endpoint (all subscription jobs share one): (order, unit, the
        # (outbox, order) it waits for or None). See "Ordering" in the module docstring.
        self._outboxes: dict[str, deque[tuple[int, Unit, tuple[str, int] | None]]] = {}
        self._order = itertools.count()
        # Identifies still in their outbox, oldest first: (order, identity).
        self._identifying: deque[tuple[int, Identity]] = deque()
        self._limiters: dict[str, EndpointLimiter] = {}
        self._in_flight: Unit | None = None
        # The request of _in_flight waits for its answer here; (unit, limiter, bytes) of it.
        self._sender = Sender(self._wake)
        self._sending: tuple[Unit, EndpointLimiter, int] | None = None
        self._retired: list[Sender] = []  # senders left waiting by an internal error
        self._paused = 0.0  # when this thread last paused for the sender
        # Per outbox, its first unit once a try got no answer or a 5xx: Klaviyo may have it.
        self._maybe_sent: dict[str, Unit] = {}
        # Per outbox, attempts of its first unit that failed with 5xx or no answer.
        self._head_failures: dict[str, int] = {}
        self._deadline: float | None = None
        self._sealed_mark = 0  # the last _flush_mark the open jobs were sealed for
        # Background identifies through bulk profile import (until a 403 turns it off):
        # the open job; the jobs sent and not imported yet, by order; and, per identifier,
        # the order of the last unfinished job holding it.
        self._bulk_identify = profile_jobs
        self._profiles = OpenProfiles()
        self._importing: dict[int, ProfileJob] = {}
        self._imports_by_pair: dict[Pair, int] = {}
        # Last: the replay queues calls into the state above.
        self._outbox = outbox
        # The outbox row of each call not final yet (sequence number -> row id).
        self._rows: dict[int, int] = {}
        if outbox is not None:
            cast(_KeepingOutcomes, self._outcomes).keep = self._keep_rows
            self._replay(outbox)

    @property
    def _batches(self) -> tuple[_Batches, ...]:
        # Profile jobs before subscription jobs: an identify's import goes before the
        # subscription its trait made.
        return (self._open, self._profiles, self._subscriptions)

    # -- the caller's side ---------------------------------------------------------------

    def submit(
        self, message_id: str, objects: Sequence[KlaviyoObject], later: Pending | None = None
    ) -> Ticket | str:
        """Queue one call's objects; return its Ticket, or why it was refused.

        Args:
            message_id: The call's id.
            objects: What the blueprint made of the call.
            later: Instead of objects, a simple call's checked event, to build on the
                worker (see ``CompiledBlueprint.prepare``).
        """
        if later is None:
            size = _estimate(objects)
            if size > MEASURE_ABOVE:
                _check_fits(objects, None)
            return self._enqueue(message_id, size, objects, None, named=True)
        size = _BASE_BYTES + _size(later.properties)
        fields = pack(later)
        if size > MEASURE_ABOVE:
            data = encode_queued((0, (), *fields), self._rule_for(later.rule))
            _check_fits((), (data, later.identity))
        return self._enqueue(message_id, size, (), fields, named=True)

    def submit_packed(self, message_id: str, fields: tuple[object, ...], size: int) -> Ticket | str:
        """Queue a simple call the caller's fast lane packed (``_blueprint.quick.quick_track``).

        Args:
            message_id: The call's id.
            fields: The call's record (``_blueprint/record``).
            size: What its properties count against ``max_queue_bytes``.
        """
        return self._enqueue(message_id, _BASE_BYTES + size, (), fields)

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
        if self._outbox is not None and row is None:
            return self._enqueue_durable(message_id, size, objects, fields, named)
        # Numbered and ticketed before taking the lock (next() on a count is atomic): the
        # lock is held only for the bookkeeping. The Ticket is registered before the call
        # is queued, so its outcome cannot be missed; a refused call's Ticket is dropped.
        seq = next(self._seq)
        ticket = Ticket(self._board, seq, message_id)
        item = (seq, objects) if fields is None else (seq, (), *fields)
        with self._lock:
            if self._closed:
                return "client is closed"
            if named and message_id in self._named.seqs:
                return _duplicate(message_id)
            if self._pending >= self._max_size or self._bytes + size > self._max_bytes:
                # On the worker thread (an on_delivery callback) no room can come while
                # the call waits: only this thread frees it.
                if not self._block or threading.current_thread() is self._thread:
                    return "queue full"
                if not self._wait_for_space(size):
                    return "client is closed"
            self._calls[seq] = (message_id, size)
            if row is not None:
                self._rows[seq] = row
            if named:
                self._named.add(message_id, seq)
            if len(objects) > 1:
                self._outcomes.parts[seq] = len(objects)
            self._pending += 1
            self._arrivals += 1
            self._bytes += size
            self._inbox.append(item)
            # Wake the thread only when it sleeps with nothing to do, or a job's worth
            # waits: an Event.set() per call would cost the caller more than the rest.
            wake = self._idle or len(self._inbox) == MAX_JOB_EVENTS
            self._idle = False
            start = self._thread is None
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
        outbox = cast(Outbox, self._outbox)
        # Read without the lock: a call that would be refused costs no write (the queue
        # decides again, under its lock).
        if self._closed:
            return "client is closed"
        if not self._block and (
            self._pending >= self._max_size or self._bytes + size > self._max_bytes
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

    def _keep_rows(self, unit: Unit) -> None:
        """Leave the rows of ``unit``'s calls in the outbox when they end now."""
        for seq in unit.owners():
            if isinstance(seq, int):
                self._rows.pop(seq, None)

    def _replay(self, outbox: Outbox) -> None:
        """Queue the calls earlier processes left in the outbox (start-up; no Delivery
        waits for them: they count in the stats and reach ``on_delivery``)."""
        rows = outbox.adopt()
        if not rows:
            return
        unreadable: list[int] = []
        with self._lock:
            for row, data in rows:
                try:
                    message_id, size, named, objects, fields = load(data)
                except ValueError:
                    unreadable.append(row)
                    continue
                seq = next(self._seq)
                self._calls[seq] = (message_id, size)
                self._rows[seq] = row
                if named:
                    self._named.add(message_id, seq)
                if len(objects) > 1:
                    self._outcomes.parts[seq] = len(objects)
                self._pending += 1
                self._arrivals += 1
                self._bytes += size
                self._inbox.append((seq, objects) if fields is None else (seq, (), *fields))
            self._idle = False
            replayed = self._pending
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
            while not self._closed and (
                self._pending >= self._max_size or self._bytes + size > self._max_bytes
            ):
                self._space.wait(0.5)
        finally:
            self._waiting_for_space -= 1
        return not self._closed

    def _start(self) -> None:
        starting_thread()
        with self._lock:
            if self._thread is not None or self._closed:
                return
            thread = threading.Thread(target=self._run, name="klaviyo-signal-worker", daemon=True)
            self._thread = thread
        try:
            thread.start()
        except RuntimeError:
            # At interpreter shutdown no thread can start; close() then sends inline.
            with self._lock:
                self._thread = None

    @property
    def pending(self) -> int:
        """Calls queued or in flight."""
        return self._pending

    @property
    def pending_bytes(self) -> int:
        """The estimated bytes those calls hold."""
        return self._bytes

    def alive(self) -> bool:
        """Whether the worker thread is running."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def flush(self, timeout: float | None) -> bool:
        """Send everything queued now; False if ``timeout`` seconds pass first.

        It waits for the calls queued before it only, so it returns under steady traffic,
        and the worker seals the jobs holding those calls once (see ``_loop``). On the
        worker thread (from on_delivery) it returns at once, False if anything is queued:
        only this thread sends, so waiting could only end in the timeout.
        """
        if threading.current_thread() is self._thread:
            return self._pending == 0
        with self._lock:
            if self._pending == 0 and self._calling == 0:
                return True
            waiting = set(self._calls)
            self._flushes.append(waiting)
            self._flush_mark = max(self._flush_mark, self._arrivals)
            self._idle = False
        self._wake.set()
        try:
            with self._lock:
                return self._drained.wait_for(lambda: not waiting and self._calling == 0, timeout)
        finally:
            with self._lock:
                self._flushes = [other for other in self._flushes if other is not waiting]

    def close(self, timeout: float) -> int:
        """Refuse new calls, send what is queued for up to ``timeout`` s, stop the thread.

        Returns:
            How many calls were still unsent; they end ``dropped`` with a shutdown reason.
        """
        deadline = self._clock() + timeout
        with self._lock:
            # A detached worker (its Client was collected) is closed once, by the exit hook.
            if self._closed and not self._detached:
                return 0
            self._closed = True
            self._detached = False
            self._deadline = deadline
            self._space.notify_all()
            thread = self._thread
        if thread is threading.current_thread():
            # close() from on_delivery: this thread cannot wait for itself. Stop after the
            # current request (its calls end as Klaviyo answers) and end every other call now.
            self._stop_thread()
            if self._sender.busy:
                self._sent(cast(Sent, self._sender.take(None)))
            return self._abandon()
        if thread is None:
            if self._pending:
                # No thread could start (interpreter shutdown): send from this one.
                self._run(deadline)
        else:
            self.flush(max(deadline - self._clock(), 0.0))
            self._stop_thread()
            # Any request, even one sent before close(), waits at most answer_timeout for
            # its answer (see _send_next); the grace covers the thread's last bookkeeping.
            thread.join(max(deadline - self._clock(), 0.0) + self._answer_timeout + _JOIN_GRACE)
        stopped = [sender.stop(_JOIN_GRACE) for sender in (self._sender, *self._retired)]
        sender_gone = all(stopped)
        left = self._abandon()
        if (
            self._transport is not None
            and sender_gone
            and not (thread is not None and thread.is_alive())
        ):
            self._transport.close()
        if self._outbox is not None:
            self._outbox.close()  # what is left in it is sent by the next process
        return left

    def detach(self, shutdown_timeout: float) -> None:
        """Let the thread finish what is queued, then end (the Client was collected).

        Until then the worker is held by the exit hook, which closes it like a Client.
        This runs from a finalizer, possibly inside a garbage collection on a thread that
        holds this worker's locks: it takes none itself and leaves the rest to a thread.
        """
        if self._closed or self._forsaken:
            return  # a forked child's copy: the parent's calls are the parent's to end
        # Plain assignments: atomic under the GIL, no lock needed.
        self._closed = True
        self._detached = True
        # RuntimeError: the interpreter is shutting down, and the exit hook has run.
        with contextlib.suppress(RuntimeError):
            threading.Thread(
                target=self._finish_detach,
                args=(shutdown_timeout,),
                name="klaviyo-signal-detach",
                daemon=True,
            ).start()

    def _finish_detach(self, shutdown_timeout: float) -> None:
        with self._lock:
            idle = self._pending == 0
        if idle:
            self._stop_thread()
            return
        adopt(self, shutdown_timeout)
        self._wake.set()

    def forsake(self) -> None:
        """In a forked child: this worker's calls are the parent's to send.

        Under gevent or eventlet its thread is a green thread, which survives the fork: at
        its next wake-up it stops sending (it would send the parent's calls again, on the
        parent's pooled connection). A plain assignment: a parent thread may have
        held the lock or the wake-up Event's lock at the fork.
        """
        self._forsaken = True

    def _stop_thread(self) -> None:
        with self._lock:
            self._stop = True
        self._wake.set()

    def _abandon(
        self,
        failure: Failure = _SHUTDOWN,
        *,
        keep: frozenset[object] = frozenset(),
        in_flight: Failure = _IN_FLIGHT,
        keep_queue: bool = False,
    ) -> int:
        """End every call not final yet, but ``keep``, with ``failure``; return how many.

        Calls of a request still in flight end with ``in_flight``: ``failed`` with a reason
        saying Klaviyo may have them, never ``dropped``: they were sent. ``keep_queue``
        spares the calls the worker has not taken from the queue yet.
        """
        units = [*self._maybe_sent.values()]
        if self._in_flight is not None:
            units.append(self._in_flight)
        for job in list(self._importing.values()):
            if job.fallback_order is None and job.job_id is not None:
                # Accepted, not yet imported: Klaviyo has them, and the calls say so.
                reason = (
                    f"{failure.key}: Klaviyo accepted profile import job {job.job_id} but had "
                    "not finished importing it when the worker stopped; its profiles are "
                    "likely imported"
                )
                owners = [seq for seq in _seqs(job.owners()) if seq not in keep]
                self._outcomes.settle(
                    owners, Failure(DeliveryStatus.FAILED, reason, None, failure.key), whole=True
                )
        with self._lock:
            if keep_queue:
                keep = keep | {item[0] for item in self._inbox}
            else:
                self._taken += len(self._inbox)  # a later flush() must not wait for these
                self._inbox.clear()
            left = [seq for seq in self._calls if seq not in keep]
        if self._rows:
            for seq in left:
                self._rows.pop(seq, None)  # their rows stay in the outbox for a later process
        if units:
            sent = {owner for unit in units for owner in unit.owners()}
            self._outcomes.settle([s for s in left if s in sent], in_flight, whole=True)
            left_unsent = [s for s in left if s not in sent]
            self._outcomes.settle(left_unsent, failure, whole=True)
        else:
            self._outcomes.settle(left, failure, whole=True)
        return len(left)

    # -- the worker thread ---------------------------------------------------------------

    def _run(self, deadline: float | None = None) -> None:
        try:
            if self._transport is None:
                # Built as the thread starts, not at the first request: building a session
                # holds the GIL for milliseconds, which calling threads would wait out.
                self._transport = self._make_transport()
            while True:
                try:
                    self._loop(deadline)
                    return
                except Exception:
                    # A bug must not leave callers waiting on a thread that died in silence.
                    log.exception("klaviyo-signal: the delivery worker hit an internal error")
                    self._recover()
                    time.sleep(_RECOVERY_PAUSE)  # a bug that repeats must not spin
        except Exception:
            # Recovery itself failed: end every call, and let the next one start a thread.
            log.exception("klaviyo-signal: the delivery worker stopped on an internal error")
            with self._lock:
                self._thread = None
            self._abandon(_BROKEN)

    def _recover(self) -> None:
        """After an internal error: fail the calls the worker had taken, keep the others.

        The calls it had taken from the queue (in open jobs, or waiting to be sent) end
        ``failed`` (internal error); the calls of the request in flight end as Klaviyo
        answers it; the calls still queued are untouched. The same thread then carries on,
        so ``close()``, ``flush()`` and a collected Client's last flush still find it.
        """
        unit = self._in_flight if self._sender.busy else None
        keep = frozenset(unit.owners()) if unit is not None else frozenset()
        self._abandon(_BROKEN, keep=keep, in_flight=_BROKEN_IN_FLIGHT, keep_queue=True)
        self._end_in_flight(keep)
        self._open = OpenJob()
        self._subscriptions = SubscriptionJobs()
        self._outboxes.clear()
        self._identifying.clear()
        self._profiles = OpenProfiles()
        self._importing.clear()
        self._imports_by_pair.clear()
        self._in_flight = None
        self._maybe_sent.clear()
        self._head_failures.clear()

    def _end_in_flight(self, owners: frozenset[object]) -> None:
        """Wait for the answer to the request in flight and end its calls (``owners``) by it.

        Without an answer within the answer timeout they end ``failed``: Klaviyo may have
        them.
        """
        if self._sender.busy:
            sent = self._sender.take(self._answer_timeout + _JOIN_GRACE)
            if sent is None:
                # The sender keeps waiting for its answer, then ends; close() joins it.
                self._sender.stop()
                self._retired = [old for old in self._retired if not old.stop()]
                self._retired.append(self._sender)
                self._sender = Sender(self._wake)
            else:
                try:
                    self._sent(sent)
                except Exception:
                    log.exception("klaviyo-signal: a request's answer could not be recorded")
        if self._sending is not None:
            self._sending[1].end(None)  # the endpoint no longer counts it in flight
            self._sending = None
        # Any of them the answer left open (a retry due, items to resend) ends now.
        self._outcomes.settle(
            [seq for seq in owners if isinstance(seq, int)], _BROKEN_IN_FLIGHT, whole=True
        )

    def _loop(self, deadline: float | None) -> None:
        while not self._forsaken:
            if self._sender.busy and (
                self._stop or (deadline is not None and self._clock() >= deadline)
            ):
                # Stopping: the request in flight is answered (or times out: its timeout
                # ends by the deadline) first, so its calls end with what Klaviyo said.
                self._sent(cast(Sent, self._sender.take(None)))
            with self._lock:
                if self._stop or (self._detached and self._pending == 0):
                    self._thread = None
                    if self._detached:
                        release(self)
                    for sender in (self._sender, *self._retired):
                        sender.stop()
                    return
                size = min(_CHUNK, len(self._inbox))
                chunk = [self._inbox.popleft() for _ in range(size)]
                self._taken += size
                taken = self._taken
                mark = self._flush_mark
                backlog = bool(self._inbox)
                closing = self._closed
            now = self._clock()
            if deadline is not None and (now >= deadline or self._pending == 0):
                return
            self._take_in(chunk, now)
            if mark > self._sealed_mark and taken >= mark:
                # Every call queued before a flush() has joined a job: seal those jobs, once.
                # Calls queued since then go on filling new jobs (a flush under steady
                # traffic must not cut every job short), and a flush of a long queue still
                # sends full jobs.
                self._sealed_mark = taken
                for batches in self._batches:
                    self._put_all(batches.due(None))
            # While closing, a partial job is sealed once the backlog has joined it.
            if not backlog:
                cutoff = None if closing else now - self._interval
                for batches in self._batches:
                    self._put_all(batches.due(cutoff))
            wait = self._exchange()
            self._turn()
            if chunk or wait == 0.0:
                continue
            self._sleep(wait, now, deadline)
        # A copy in a forked child (see forsake) parks, as it slept before the fork: it may
        # not end, since gevent's threading forgot it at the fork and would fail to.
        threading.Event().wait()

    def _take_in(self, chunk: list[tuple[object, ...]], now: float) -> None:
        """Absorb a chunk of calls, ending a slice (``_turn``) wherever one is due."""
        for item in chunk:
            if self._stop:
                break  # closed from a callback: the rest were ended with it
            self._absorb(item, now)
            self._turn()

    def _turn(self) -> None:
        """End the worker's slice once it has run ``_SLICE``: while callers are active,
        or the sender has waited ``_SENDER_TURN``, sleep a moment so they get the GIL.

        Every stretch of the worker's work (encoding calls, building a body, ending a
        job's calls) calls this often, so none holds the GIL for longer than a slice.
        """
        now = time.perf_counter()
        if now - self._slice < _SLICE:
            return
        if self._arrivals != self._seen:
            self._seen = self._arrivals
            self._active_until = now + _ACTIVE
        if now < self._active_until or (self._sender.busy and now - self._paused >= _SENDER_TURN):
            self._paused = now
            time.sleep(_YIELD)
            now = time.perf_counter()
        self._slice = now

    def _exchange(self) -> float | None:
        """Take the answer to the request in flight, or send the outbox's next unit.

        Returns:
            As ``_send_next``: 0.0 to go on at once, None to sleep until woken, else the
            seconds until the next unit may go.
        """
        if self._sender.busy:
            sent = self._sender.take()
            return None if sent is None else self._sent(sent)
        if self._stop or self._forsaken:
            return None  # closed from a callback, or forked: nothing more goes out
        return self._send_next() if any(self._outboxes.values()) else None

    def _step_aside(self) -> None:
        """Between the slices of a large job's outcomes: end the worker's slice if due."""
        self._turn()

    def _sleep(self, wait: float | None, now: float, deadline: float | None) -> None:
        oldest = min((t for b in self._batches if (t := b.oldest) is not None), default=None)
        if oldest is not None:
            due = max(oldest + self._interval - now, 0.0)
            wait = due if wait is None else min(wait, due)
        if deadline is not None:
            wait = max(min(wait if wait is not None else deadline, deadline - now), 0.0)
        with self._lock:
            if self._inbox or self._stop:
                return
            # With no open job, the first new call wakes the thread: to join the next job
            # while a request is in flight, and to start its job's timer while the thread
            # waits out one endpoint's pause (the call may go to another endpoint).
            self._idle = oldest is None
            self._wake.clear()
        if self._sender.done:
            return  # the answer came before the clear: its wake-up is gone, take it now
        self._wake.wait(wait)
        self._slice = time.perf_counter()  # the GIL was free all along: a fresh slice

    def _absorb(self, item: tuple[object, ...], now: float) -> None:
        """Put one call's objects (or its Pending event) into an open job or the outbox."""
        seq: int = item[0]  # type: ignore[assignment]
        objects: Sequence[KlaviyoObject] = item[1]  # type: ignore[assignment]
        if len(item) > 2:
            try:
                rule = self._rule_for(item[ITEM_RULE])  # type: ignore[arg-type]
                data = encode_queued(item, rule)
                unique = unique_key(rule.metric, item[ITEM_UNIQUE_ID])  # type: ignore[arg-type]
                self._add_event(seq, data, item[ITEM_IDENTITY], now, unique)  # type: ignore[arg-type]
            except (KlaviyoSignalError, ValueError, TypeError, KeyError) as exc:
                # Never expected (CompiledBlueprint.prepare made every check), never silent either.
                log.exception("klaviyo-signal: a checked call could not be built")
                reason = f"could not build the call's event: {exc}"
                failure = Failure(DeliveryStatus.FAILED, reason, None, "internal error")
                self._outcomes.settle([seq], failure)
            return
        link: tuple[str, int] | None = None
        for obj in objects:
            try:
                if isinstance(obj, Event):
                    unique = unique_key(obj.metric, obj.unique_id)
                    self._add_event(seq, encode_event(obj), obj.profile, now, unique)
                elif isinstance(obj, Profile):
                    self._add_identify(seq, obj, link)
                elif isinstance(obj, ClientProfile):
                    # The anonymous id's link goes first (after this person's earlier
                    # events): the import waits for it, and then finds one profile.
                    body = profile_bytes(obj.profile)
                    unit = Identify(seq, body, CLIENT_PROFILES)
                    after = self._after_events(obj.profile.identity)
                    link = (CLIENT_PROFILES, self._put(unit, after))
                else:
                    self._put_all(self._subscriptions.add(obj, seq, now))
            except (KlaviyoSignalError, ValueError, TypeError) as exc:
                # A value the JSON writer refuses fails this call alone, not its batch.
                reason = f"could not encode the call: {exc}"
                failure = Failure(DeliveryStatus.FAILED, reason, None, "could not encode")
                self._outcomes.settle([seq], failure)

    def _add_identify(
        self, seq: int, profile: Profile, link: tuple[str, int] | None = None
    ) -> None:
        """Queue a profile import after the call's own anonymous-id ``link`` (which waits
        for this person's earlier event jobs), or else after those jobs."""
        identity = profile.identity
        after = link if link is not None else self._after_events(identity)
        if self._bulk_identify and self._profiles.fits(profile):
            self._add_to_profile_job(seq, profile, after)
            return
        order = self._put(Identify(seq, profile_bytes(profile)), after)
        self._identifying.append((order, identity))

    def _add_to_profile_job(
        self, seq: int, profile: Profile, after: tuple[str, int] | None
    ) -> None:
        """Put an identify into the open profile job, after the unfinished jobs of its person.

        A person's earlier job must be imported (not only sent) before the next one goes:
        Klaviyo may import two accepted jobs in either order.
        """
        waits = [after] if after is not None else []
        now = self._clock()
        earlier = self._imported_before(pairs_of(profile.identity))
        if self._profiles.add(profile, seq, now, [*waits, *earlier]):
            if self._profiles.full:
                self._put(self._profiles.seal())
            return
        self._put(self._profiles.seal())  # the person's other version goes first
        earlier = self._imported_before(pairs_of(profile.identity))
        self._profiles.add(profile, seq, now, [*waits, *earlier])

    def _imported_before(self, pairs: Iterable[Pair]) -> list[tuple[str, int]]:
        """Return a wait for the last unfinished profile job holding one of ``pairs``."""
        found = self._imports_by_pair
        latest = max((found.get(pair, -1) for pair in pairs), default=-1)
        return [(_IMPORTED, latest)] if latest >= 0 else []

    def _after_events(self, identity: Identity) -> tuple[str, int] | None:
        """Seal the open job if it holds this person's events; return the last event job
        of theirs still waiting, for a profile write to wait for."""
        if self._open.mentions(identity):
            # Events of this person queued before the identify go first, so a later
            # bulk job cannot overwrite what the identify set.
            self._put(self._open.seal())
        after = None
        for order, job, _ in reversed(self._outboxes.get(BulkJob.endpoint, ())):
            if cast(BulkJob, job).mentions(identity):
                after = (BulkJob.endpoint, order)  # the last job with their earlier events
                break
        return after

    def _put(self, unit: Unit, after: tuple[str, int] | None = None) -> int:
        """Queue a sealed unit at the end of its endpoint's outbox; return its order."""
        if type(unit) is SubscriptionJob and len(self._profiles):
            who = [("email", s.email) for s in unit.subs if s.email is not None]
            who += [("phone_number", s.phone_number) for s in unit.subs if s.phone_number]
            if self._profiles.mentions_any(who):
                self._put(self._profiles.seal())  # the identify's import goes first
        if after is None and type(unit) is BulkJob:
            # After a fallback every identify, a converted job's too, is a profile import.
            if self._identifying and not self._bulk_identify:
                after = self._identify_before(unit)
            if after is None and (self._imports_by_pair or len(self._profiles)):
                after = self._import_before(unit)
            if after is None and self._identifying:
                after = self._identify_before(unit)
        key = _outbox_of(unit)
        outbox = self._outboxes.get(key)
        if outbox is None:
            outbox = self._outboxes[key] = deque()
        order = next(self._order)
        outbox.append((order, unit, after))
        if type(unit) is ProfileJob:
            unit.order = order
            for pair in unit.who():
                self._imports_by_pair[pair] = order
        return order

    def _import_before(self, job: BulkJob) -> tuple[str, int] | None:
        """Return a wait for the last profile job holding a person of ``job`` to be imported.

        An event queued after its person's identify waits until Klaviyo has imported that
        identify's job, so it is never recorded on a profile that lacks the identifiers (see
        docs/delivery.md). The open profile job is sealed for it first.
        """
        who = job.who()
        if self._profiles.mentions_any(who):
            self._put(self._profiles.seal())
        waits = self._imported_before(who)
        return waits[0] if waits else None

    def _put_all(self, units: Iterable[Unit]) -> None:
        for unit in units:
            self._put(unit)

    def _identify_before(self, job: BulkJob) -> tuple[str, int] | None:
        """Return the last identify still waiting for a person of ``job``, if any."""
        outbox = self._outboxes.get(PROFILE_IMPORT)
        head = outbox[0][0] if outbox else None
        waiting = self._identifying
        while waiting and (head is None or waiting[0][0] < head):
            waiting.popleft()  # sent (or ended) already
        for order, identity in reversed(waiting):
            if job.mentions(identity):
                return (PROFILE_IMPORT, order)
        return None

    def _ready(self, after: tuple[str, int] | None) -> bool:
        """Whether the unit that waits for ``after`` may go: that unit left its outbox, or,
        for a wait on ``_IMPORTED``, every profile job up to that order was imported."""
        if after is None:
            return True
        if after[0] == _IMPORTED:
            return self._imported(after[1])
        outbox = self._outboxes.get(after[0])
        return not outbox or outbox[0][0] > after[1]

    def _imported(self, order: int) -> bool:
        """Whether every profile job up to ``order`` has ended (imported, failed, resent)."""
        outbox = self._outboxes.get(PROFILE_JOBS)
        if outbox and outbox[0][0] <= order:
            return False
        for earlier in [o for o in self._importing if o <= order]:
            job = self._importing[earlier]
            if job.fallback_order is None or not self._ready((PROFILE_IMPORT, job.fallback_order)):
                return False
            self._finish(job)  # its profile imports have all gone
        return True

    def _waits_done(self, unit: Unit, now: float) -> float | None:
        """Return 0.0 when ``unit``'s own waits are over, the seconds until a poll is due,
        or None while it waits for other units."""
        if type(unit) is Poll:
            return max(unit.not_before - now, 0.0)
        waits = unit.waits if isinstance(unit, (ProfileJob, Identify)) else None
        if waits and not all(self._ready(wait) for wait in waits.items()):
            return None
        return 0.0

    def _add_event(
        self, seq: int, data: bytes, profile: Profile | IdentityKey, now: float, unique: str
    ) -> None:
        if self._open.add(data, profile, seq, now, unique):
            if self._open.events >= MAX_JOB_EVENTS:
                self._put(self._open.seal())
            return
        if self._open.events:
            self._put(self._open.seal())
            if self._open.add(data, profile, seq, now, unique):
                return
        reason = "the event alone is over Klaviyo's 5 MB request limit"
        self._outcomes.settle([seq], Failure(DeliveryStatus.FAILED, reason, None, "too large"))

    def _limiter(self, endpoint: str) -> EndpointLimiter:
        limiter = self._limiters.get(endpoint)
        if limiter is None:
            burst, steady = (None, None)
            if self._limits is not None and endpoint in self._limits:
                burst, steady = self._limits[endpoint]
            if self._rate_store is None:
                limiter = EndpointLimiter(burst, steady, clock=self._clock)
            else:
                # A slot stays in flight at most until an answer is due, plus the time it
                # may wait for another endpoint's request to finish first.
                lease = 2 * (self._answer_timeout + _JOIN_GRACE)
                limiter = self._rate_store.limiter(
                    endpoint, burst, steady, lease=lease, clock=self._clock
                )
            self._limiters[endpoint] = limiter
        return limiter

    def _send_next(self) -> float | None:
        """Send the oldest first unit of any outbox that may go now; else return the wait.

        A first unit may go when its endpoint's limiter allows and the unit it waits for
        (if any) has left its outbox.

        Returns:
            0.0 when the request ended already (sent inline), None while its answer is
            awaited (the Sender wakes the thread), else the seconds until one may go.
        """
        best: tuple[int, Unit, EndpointLimiter] | None = None
        wait: float | None = None
        now = self._clock()
        for outbox in self._outboxes.values():
            if not outbox:
                continue
            order, head, after = outbox[0]
            if not self._ready(after) or (best is not None and best[0] < order):
                continue
            due = self._waits_done(head, now)
            if due is None:
                continue
            if due > 0:
                wait = due if wait is None else min(wait, due)
                continue
            head_limiter = self._limiter(head.endpoint)
            delay = head_limiter.delay()
            if delay > 0:
                wait = delay if wait is None else min(wait, delay)
                continue
            best = (order, head, head_limiter)
        if best is None:
            return wait
        _, unit, limiter = best
        endpoint = unit.endpoint
        if self._transport is None:
            self._transport = self._make_transport()
        # A full job's body is put together in slices; the others are small or encoded already.
        body = unit.body(self._turn) if type(unit) is BulkJob else unit.body()
        timeout = self._answer_timeout
        if self._deadline is not None:
            timeout = min(timeout, max(self._deadline - self._clock(), _MIN_TIMEOUT))
        limiter.begin()
        self._in_flight = unit
        self._sending = (unit, limiter, len(body))
        if type(unit) is Poll:
            request = functools.partial(
                self._transport.get, unit.path(), endpoint=endpoint, timeout=timeout
            )
        else:
            path = endpoint.split(" ", 1)[1]
            request = functools.partial(self._transport.post, path, body, timeout=timeout)
        self._sender.post(request)
        sent = self._sender.take()
        return None if sent is None else self._sent(sent)

    def _sent(self, sent: Sent) -> float:
        """Record the outcome of the request in flight; the outbox moves on."""
        sending, self._sending = self._sending, None
        if sending is None:
            raise RuntimeError("an outcome arrived with no request in flight")  # a bug
        unit, limiter, size = sending
        endpoint = unit.endpoint
        try:
            if sent.error is not None:
                raise sent.error
            answer = cast(Answer, sent.answer)
        except APIError as exc:
            limiter.end(exc.headers, throttled=exc.status == 429)
            self._stats.request(size, rate_limited=exc.status == 429)
            if exc.status == 429:
                self._stats.retry()
                self._outcomes.throttled(endpoint, limiter.throttle(exc.retry_after))
                return 0.0
            if (exc.status in SERVER_ERROR_STATUSES or exc.transient) and self._retry_head(
                limiter, exc.retry_after
            ):
                return 0.0
            rest, then = self._refused(unit, exc)
        except TransportError as exc:
            limiter.end(None)
            self._stats.request(size)
            if self._retry_head(limiter, None):
                return 0.0
            rest, then = self._unreachable(unit, exc)
        except Exception:
            # A bug on the request's path: the endpoint must not count it in flight forever,
            # and its calls end saying Klaviyo may have them.
            limiter.end(None)
            self._stats.request(size)
            owners = [seq for seq in unit.owners() if isinstance(seq, int)]
            self._outcomes.settle(owners, _BROKEN_IN_FLIGHT, whole=True)
            raise
        else:
            limiter.end(answer.headers)
            self._stats.request(size)
            # What follows a profile job's answer (polling, profile imports instead) once
            # the unit left its outbox: it needs the unit's order.
            rest, then = None, self._accepted(unit, answer)
        finally:
            self._in_flight = None
        key = _outbox_of(unit)
        outbox = self._outboxes[key]
        order = outbox.popleft()[0]  # the unit in flight is its outbox's first
        self._job_moved(unit, then, rest, order)
        waiting = self._identifying
        while waiting and waiting[0][0] <= order and type(unit) is Identify:
            waiting.popleft()  # identifies end in order: this one is the oldest
        self._head_failures.pop(key, None)
        self._maybe_sent.pop(key, None)
        if rest is not None:
            # The items Klaviyo did not object to go again, first in line, in its place.
            self._stats.retry()
            outbox.appendleft((order, rest, None))
        return 0.0

    def _retry_head(self, limiter: EndpointLimiter, retry_after: float | None) -> bool:
        """Schedule the unit in flight again after a 5xx or no answer; False when retries ran out.

        Retries go back through the endpoint's limiter (a pause with backoff), so they
        count against Klaviyo's windows like any other request; other outboxes go on.
        """
        unit = cast(Unit, self._in_flight)  # still set while _sent reads the answer
        key = _outbox_of(unit)
        failures = self._head_failures.get(key, 0)
        if failures >= self._max_retries:
            return False
        failures = self._head_failures[key] = failures + 1
        self._maybe_sent[key] = unit
        self._stats.retry()
        if retry_after is None:
            # Exponential backoff with jitter, as urllib3 would: 0.5 s, 1 s, 2 s... up to 30 s.
            backoff = min(_MAX_BACKOFF, 0.5 * 2 ** (failures - 1))
            retry_after = backoff * (0.5 + random.random() / 2)  # jitter, not a secret
        limiter.throttle(retry_after)
        return True

    # -- profile jobs: accepted, polled, imported ------------------------------------------

    def _accepted(self, unit: Unit, answer: Answer) -> Callable[[int], None] | None:
        """Record a 2xx; for a profile job or a poll, return what follows once it left."""
        if type(unit) is ProfileJob:
            return functools.partial(self._job_accepted, unit, answer)
        if type(unit) is Poll:
            return functools.partial(self._polled, unit, answer)
        self._outcomes.accepted(unit, answer.status)
        return None

    def _refused(
        self, unit: Unit, exc: APIError
    ) -> tuple[Unit | None, Callable[[int], None] | None]:
        """Record a 4xx (or a last 5xx); return what to send again and what follows."""
        if isinstance(unit, (ProfileJob, Poll)) and _lacks_scope(exc):
            job = unit if isinstance(unit, ProfileJob) else unit.job
            return None, functools.partial(self._fall_back, job, exc)
        if type(unit) is Poll:
            self._poll_failed(unit, str(exc), exc.status)
            return None, None
        return self._outcomes.refused(unit, exc), None

    def _unreachable(
        self, unit: Unit, exc: TransportError
    ) -> tuple[Unit | None, Callable[[int], None] | None]:
        """Record a request that got no usable answer after its retries."""
        if type(unit) is Poll:
            self._poll_failed(unit, str(exc), None)
        else:
            self._outcomes.unreachable(unit, exc)
        return None, None

    def _job_moved(
        self, unit: Unit, then: Callable[[int], None] | None, rest: Unit | None, order: int
    ) -> None:
        """After a profile job or poll left its outbox: poll on, fall back, or forget it."""
        if then is not None:
            then(order)
        elif type(unit) is ProfileJob:
            if rest is None:
                self._finish(unit)  # refused or unreachable: its calls ended already
            elif type(rest) is ProfileJob:
                rest.order = order  # what Klaviyo did not object to goes again

    def _job_accepted(self, job: ProfileJob, answer: Answer, _order: int) -> None:
        """Klaviyo took a profile job (202): poll it until it has been imported."""
        job_id, _, _ = job_of(answer.body)
        now = self._clock()
        self._importing[job.order] = job
        if job_id is None:
            reason = (
                "Klaviyo accepted the profile import job but its answer named no job id, so "
                "whether it imported the profile cannot be known"
            )
            self._end_job(job, Failure(DeliveryStatus.FAILED, reason, answer.status, "no job id"))
            return
        job.job_id, job.accepted_at = job_id, now
        self._put(Poll(job, JOB_STATUS, now + profile_jobs.FIRST_POLL))

    def _polled(self, poll: Poll, answer: Answer, _order: int) -> None:
        """Read a job's status or a page of its import errors; poll on, or end its calls."""
        job = poll.job
        now = self._clock()
        if poll.endpoint == IMPORT_ERRORS:
            cursor = job.record_errors(answer.body)
            if cursor is not None:
                self._put(Poll(job, IMPORT_ERRORS, now, cursor))
            else:
                self._job_imported(job)
            return
        _, status, failed = job_of(answer.body)
        job.status = status or "unknown"
        job.polls += 1
        if status == "complete":
            if failed:
                self._put(Poll(job, IMPORT_ERRORS, now))
            else:
                self._job_imported(job)
        elif status == "cancelled":
            reason = f"Klaviyo cancelled profile import job {job.job_id}; nothing was imported"
            self._end_job(job, Failure(DeliveryStatus.FAILED, reason, None, "import cancelled"))
        elif now - job.accepted_at >= profile_jobs.IMPORT_TIMEOUT:
            reason = (
                f"Klaviyo accepted profile import job {job.job_id} but had not imported it "
                f"{profile_jobs.IMPORT_TIMEOUT:g} s later (status {job.status!r}); its profiles "
                "may still be imported"
            )
            self._end_job(job, Failure(DeliveryStatus.FAILED, reason, None, "import timeout"))
        else:
            pause = min(profile_jobs.FIRST_POLL * 2**job.polls, profile_jobs.MAX_POLL_INTERVAL)
            self._put(Poll(job, JOB_STATUS, now + pause))

    def _job_imported(self, job: ProfileJob) -> None:
        """End each call of an imported job: failed where Klaviyo refused its profile."""
        for index, detail in sorted(job.failures.items()):
            reason = f"Klaviyo refused the profile in import job {job.job_id}: {detail}"
            failure = Failure(DeliveryStatus.FAILED, reason, None, "import error")
            self._outcomes.settle(_seqs(job.owners_of(index)), failure)
        if job.unmatched:
            self._outcomes.once(
                "import errors unmatched",
                logging.WARNING,
                "klaviyo-signal: profile import job %s reported %d import errors naming no "
                "profile of the job; those calls count as delivered (logged once)",
                job.job_id,
                job.unmatched,
            )
        good = [o for i, e in enumerate(job.entries) if i not in job.failures for o in e.owners]
        self._outcomes.settle(good, None, http_status=202, sliced=True)
        self._finish(job)

    def _end_job(self, job: ProfileJob, failure: Failure) -> None:
        self._outcomes.settle(_seqs(job.owners()), failure)
        self._finish(job)

    def _poll_failed(self, poll: Poll, problem: str, http_status: int | None) -> None:
        job = poll.job
        reason = (
            f"Klaviyo accepted profile import job {job.job_id}, but polling it failed, so "
            f"whether it imported the profile is not known: {problem}"
        )
        self._end_job(job, Failure(DeliveryStatus.FAILED, reason, http_status))

    def _finish(self, job: ProfileJob) -> None:
        """Forget an ended profile job: the units waiting for its import may go."""
        self._importing.pop(job.order, None)
        found = self._imports_by_pair
        for pair in job.who():
            if found.get(pair) == job.order:
                del found[pair]

    def _fall_back(self, failed: ProfileJob, exc: APIError, _order: int) -> None:
        """The key may not use bulk profile import (403): send identifies one by one.

        Every profile job not imported yet (this one, those waiting, the open one) becomes
        its calls' own profile imports, in call order, after what each job waited for;
        later identifies of this Client go there too. Nothing is lost, and an event waiting
        for a job waits for those imports instead.
        """
        self._bulk_identify = False
        self._outcomes.once(
            "profile jobs 403",
            logging.WARNING,
            "klaviyo-signal: Klaviyo refused bulk profile import for this key (%s); identify "
            "falls back to POST /api/profile-import for this client, one request per call, "
            "nothing lost (logged once; give the key the scopes named for bulk import)",
            exc,
        )
        jobs = {job.order: job for job in self._importing.values() if job.fallback_order is None}
        jobs[failed.order] = failed
        waiting = self._outboxes.get(PROFILE_JOBS, deque())
        for _, unit, _ in waiting:
            job = cast(ProfileJob, unit)
            jobs[job.order] = job
        waiting.clear()
        for key in (JOB_STATUS, IMPORT_ERRORS):
            polls = self._outboxes.get(key)
            if polls:
                kept = [entry for entry in polls if cast(Poll, entry[1]).job.order not in jobs]
                polls.clear()
                polls.extend(kept)
        if len(self._profiles):
            jobs[next(self._order)] = self._profiles.seal()
        for job_order in sorted(jobs):
            job = jobs[job_order]
            job.order = job_order
            last = None
            for index, (owner, profile) in enumerate(job.originals()):
                unit = Identify(owner, profile_bytes(profile))
                if index == 0:
                    unit.waits = job.waits
                last = self._put(unit)
                self._identifying.append((last, profile.identity))
            if last is None:
                self._finish(job)
                continue
            job.fallback_order = last
            self._importing[job_order] = job

    def _settled(self, finals: Sequence[tuple[int, int]], calling: bool = False) -> None:
        """Release the queue room of calls that just became final (called by Outcomes).

        With ``calling``, their on_delivery callbacks run next: a flush waits for them
        (until ``_called``), so the callbacks of every call have run when it returns.
        With an outbox, their rows are deleted first (``_abandon`` takes the rows of the
        calls it ends out of ``_rows`` first: those calls are sent by a later process).
        """
        if self._rows:
            pop = self._rows.pop
            rows = [row for seq, _ in finals if (row := pop(seq, None)) is not None]
            cast(Outbox, self._outbox).remove(rows)
        with self._lock:
            named = self._named
            for seq, size in finals:
                self._pending -= 1
                self._bytes -= size
                if named.ids:
                    named.drop(seq)
            self._calling += calling
            if self._waiting_for_space:
                self._space.notify_all()
            flushed = False
            for waiting in self._flushes:
                for seq, _ in finals:
                    waiting.discard(seq)
                flushed = flushed or not waiting
            if (flushed or self._pending == 0) and self._calling == 0:
                self._drained.notify_all()

    def _called(self) -> None:
        """The callbacks announced to ``_settled`` have run."""
        with self._lock:
            self._calling -= 1
            if self._calling == 0:
                self._drained.notify_all()
