"""The background worker: a bounded queue, and one thread that batches, paces and sends.

Three parts, joined by callbacks: the caller's side (``_delivery/queue``) admits calls
into a deque, with back-pressure; the thread here takes queued calls in chunks, encodes
their events into the open bulk job (``_delivery/jobs``) and their subscriptions into the
open job of their list (``_delivery/subscription_jobs``), seals a job when it is full, when
its oldest call is ``flush_interval`` old, or on ``flush()``/``close()`` (once, for the jobs
holding the calls queued before it); and dispatch (``_delivery/dispatch``) sends sealed jobs
and profile imports one request at a time, each when its endpoint's limiter allows, in the
order its module docstring states, retrying as it says. What an answer means for each call
is ``_delivery/outcomes``' business.

Nothing starts before the first call (with an outbox, before the calls an earlier process
left in it: ``_delivery/outbox``), and ``close()`` leaves no thread behind.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import cast

from .._blueprint.record import ITEM_IDENTITY, ITEM_RULE, ITEM_UNIQUE_ID
from .._blueprint.rules import Rule
from .._errors import KlaviyoSignalError
from .._klaviyo.models import ClientProfile, Event, KlaviyoObject, Profile
from .._klaviyo.transport import KlaviyoAPI
from .._klaviyo.wire import profile_bytes
from .delivery import Board, DeliveryStatus, OnDelivery
from .dispatch import BROKEN_IN_FLIGHT, JOIN_GRACE, Dispatch, seqs
from .jobs import encode_event, encode_queued, unique_key
from .lifecycle import adopt, release, starting_thread
from .outbox import Outbox
from .outcomes import CLIENT_PROFILES, Failure, Identify, Outcomes
from .queue import KeepingOutcomes, Queue
from .ratelimit import RateLimits
from .ratestore import RateStore
from .sender import Sent
from .stats import Counters

__all__ = ["Worker"]

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
_SHUTDOWN_REASON = "shutdown: not sent before the client closed (shutdown_timeout passed)"
_SHUTDOWN = Failure(DeliveryStatus.DROPPED, _SHUTDOWN_REASON, None, "shutdown")
_IN_FLIGHT_REASON = (
    "shutdown: the request was still in flight when shutdown_timeout passed; Klaviyo may "
    "have received it (sending it again with the same message_id is safe)"
)
_IN_FLIGHT = Failure(DeliveryStatus.FAILED, _IN_FLIGHT_REASON, None, "shutdown")
_BROKEN_REASON = "internal error in the delivery worker (see the klaviyo_signal log)"
_BROKEN = Failure(DeliveryStatus.FAILED, _BROKEN_REASON, None, "internal error")


class Worker:
    """Queues calls and sends them from one background thread.

    Args:
        make_transport: Builds the worker's HTTP transport (on the worker thread, lazily).
        limits: Per-endpoint (burst per second, steady per minute), or None for no
            client-side limit.
        rule_for: The blueprint's ``rule_for``: the rule of a queued record.
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

    def __init__(
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
        self._clock = clock
        self._interval = flush_interval
        self._answer_timeout = answer_timeout
        self._rule_for = rule_for
        self._wake = threading.Event()
        queue = self._queue = Queue(
            board=board,
            rule_for=rule_for,
            max_queue_size=max_queue_size,
            max_queue_bytes=max_queue_bytes,
            block_on_full=block_on_full,
            outbox=outbox,
            wake=self._wake,
            start=self._start,
        )
        self._lock = queue.lock  # the queue's: the thread's bookkeeping shares it
        self._outcomes = outcomes = (Outcomes if outbox is None else KeepingOutcomes)(
            stats, board, on_delivery, queue.settled, self._step_aside, called=queue.called
        )
        # The queue numbers calls into the Outcomes' own dicts.
        queue.calls = outcomes.calls
        queue.parts = outcomes.parts
        self._dispatch = Dispatch(
            make_transport=make_transport,
            limits=limits,
            stats=stats,
            outcomes=outcomes,
            wake=self._wake,
            turn=self._step_aside,
            clock=clock,
            max_retries=max_retries,
            answer_timeout=answer_timeout,
            rate_store=rate_store,
            profile_jobs=profile_jobs,
        )
        # The caller's side is the queue's own, bound here: a call costs no extra layer.
        self.submit = queue.submit
        self.submit_record = queue.submit_record
        self.flush = queue.flush
        self._seen = 0  # the queue's arrivals the thread last saw
        # When the worker's current slice began (perf_counter), and until when callers
        # count as active (see _turn); when this thread last paused for the sender.
        self._slice = 0.0
        self._active_until = 0.0
        self._paused = 0.0
        self._stop = False
        # Set in a forked child, where this worker is the parent's (see ``forsake``).
        self._forsaken = False
        self._detached = False
        self._sealed_mark = 0  # the last flush_mark the open jobs were sealed for
        # Last: the replay queues calls into the state above.
        if outbox is not None:
            cast(KeepingOutcomes, outcomes).keep = queue.keep_rows
            queue.replay(outbox)

    def _start(self) -> None:
        starting_thread()
        queue = self._queue
        with self._lock:
            if queue.thread is not None or queue.closed:
                return
            thread = threading.Thread(target=self._run, name="klaviyo-signal-worker", daemon=True)
            queue.thread = thread
        try:
            thread.start()
        except RuntimeError:
            # At interpreter shutdown no thread can start; close() then sends inline.
            with self._lock:
                queue.thread = None

    @property
    def pending(self) -> int:
        """Calls queued or in flight."""
        return self._queue.pending

    @property
    def pending_bytes(self) -> int:
        """The estimated bytes those calls hold."""
        return self._queue.pending_bytes

    def alive(self) -> bool:
        """Whether the worker thread is running."""
        thread = self._queue.thread
        return thread is not None and thread.is_alive()

    def close(self, timeout: float) -> int:
        """Refuse new calls, send what is queued for up to ``timeout`` s, stop the thread.

        Returns:
            How many calls were still unsent; they end ``dropped`` with a shutdown reason.
        """
        queue, dispatch = self._queue, self._dispatch
        deadline = self._clock() + timeout
        with self._lock:
            # A detached worker (its Client was collected) is closed once, by the exit hook.
            if queue.closed and not self._detached:
                return 0
            queue.closed = True
            self._detached = False
            dispatch.deadline = deadline
            queue.space.notify_all()
            thread = queue.thread
        if thread is threading.current_thread():
            # close() from on_delivery: this thread cannot wait for itself. Stop after the
            # current request (its calls end as Klaviyo answers) and end every other call now.
            self._stop_thread()
            if dispatch.sender.busy:
                dispatch.sent(cast(Sent, dispatch.sender.take(None)))
            return self._abandon()
        if thread is None:
            if queue.pending:
                # No thread could start (interpreter shutdown): send from this one.
                self._run(deadline)
        else:
            self.flush(max(deadline - self._clock(), 0.0))
            self._stop_thread()
            # Any request, even one sent before close(), waits at most answer_timeout for its
            # answer (see Dispatch.send_next); the grace covers the thread's last bookkeeping.
            thread.join(max(deadline - self._clock(), 0.0) + self._answer_timeout + JOIN_GRACE)
        stopped = [sender.stop(JOIN_GRACE) for sender in (dispatch.sender, *dispatch.retired)]
        sender_gone = all(stopped)
        left = self._abandon()
        if (
            dispatch.transport is not None
            and sender_gone
            and not (thread is not None and thread.is_alive())
        ):
            dispatch.transport.close()
        if queue.outbox is not None:
            queue.outbox.close()  # what is left in it is sent by the next process
        return left

    def detach(self, shutdown_timeout: float) -> None:
        """Let the thread finish what is queued, then end (the Client was collected).

        Until then the worker is held by the exit hook, which closes it like a Client.
        This runs from a finalizer, possibly inside a garbage collection on a thread that
        holds this worker's locks: it takes none itself and leaves the rest to a thread.
        """
        if self._queue.closed or self._forsaken:
            return  # a forked child's copy: the parent's calls are the parent's to end
        # Plain assignments: atomic under the GIL, no lock needed.
        self._queue.closed = True
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
            idle = self._queue.pending == 0
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
        queue, dispatch = self._queue, self._dispatch
        units = [*dispatch.maybe_sent.values()]
        if dispatch.in_flight is not None:
            units.append(dispatch.in_flight)
        for job in list(dispatch.importing.values()):
            if job.fallback_order is None and job.job_id is not None:
                # Accepted, not yet imported: Klaviyo has them, and the calls say so.
                reason = (
                    f"{failure.key}: Klaviyo accepted profile import job {job.job_id} but had "
                    "not finished importing it when the worker stopped; its profiles are "
                    "likely imported"
                )
                owners = [seq for seq in seqs(job.owners()) if seq not in keep]
                self._outcomes.settle(
                    owners, Failure(DeliveryStatus.FAILED, reason, None, failure.key), whole=True
                )
        with self._lock:
            if keep_queue:
                keep = keep | {item[0] for item in queue.inbox}
            else:
                queue.taken += len(queue.inbox)  # a later flush() must not wait for these
                queue.inbox.clear()
            left = [seq for seq in queue.calls if seq not in keep]
        if queue.rows:
            for seq in left:
                queue.rows.pop(seq, None)  # their rows stay in the outbox for a later process
        if units:
            sent = {owner for unit in units for owner in unit.owners()}
            self._outcomes.settle([s for s in left if s in sent], in_flight, whole=True)
            left_unsent = [s for s in left if s not in sent]
            self._outcomes.settle(left_unsent, failure, whole=True)
        else:
            self._outcomes.settle(left, failure, whole=True)
        return len(left)

    # -- the worker thread -----------------------------------------------------------------

    def _run(self, deadline: float | None = None) -> None:
        queue, dispatch = self._queue, self._dispatch
        try:
            if dispatch.transport is None:
                # Built as the thread starts, not at the first request: building a session
                # holds the GIL for milliseconds, which calling threads would wait out.
                dispatch.transport = dispatch.make_transport()
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
                queue.thread = None
            self._abandon(_BROKEN)

    def _recover(self) -> None:
        """After an internal error: fail the calls the worker had taken, keep the others.

        The calls it had taken from the queue (in open jobs, or waiting to be sent) end
        ``failed`` (internal error); the calls of the request in flight end as Klaviyo
        answers it; the calls still queued are untouched. The same thread then carries on,
        so ``close()``, ``flush()`` and a collected Client's last flush still find it.
        """
        dispatch = self._dispatch
        unit = dispatch.in_flight if dispatch.sender.busy else None
        keep = frozenset(unit.owners()) if unit is not None else frozenset()
        self._abandon(_BROKEN, keep=keep, in_flight=BROKEN_IN_FLIGHT, keep_queue=True)
        dispatch.end_in_flight(keep)
        dispatch.reset()

    def _loop(self, deadline: float | None) -> None:
        queue, dispatch = self._queue, self._dispatch
        while not self._forsaken:
            if dispatch.sender.busy and (
                self._stop or (deadline is not None and self._clock() >= deadline)
            ):
                # Stopping: the request in flight is answered (or times out: its timeout
                # ends by the deadline) first, so its calls end with what Klaviyo said.
                dispatch.sent(cast(Sent, dispatch.sender.take(None)))
            with self._lock:
                if self._stop or (self._detached and queue.pending == 0):
                    queue.thread = None
                    if self._detached:
                        release(self)
                    for sender in (dispatch.sender, *dispatch.retired):
                        sender.stop()
                    return
                size = min(_CHUNK, len(queue.inbox))
                chunk = [queue.inbox.popleft() for _ in range(size)]
                queue.taken += size
                taken = queue.taken
                mark = queue.flush_mark
                backlog = bool(queue.inbox)
                closing = queue.closed
            now = self._clock()
            if deadline is not None and (now >= deadline or queue.pending == 0):
                return
            self._take_in(chunk, now)
            if mark > self._sealed_mark and taken >= mark:
                # Every call queued before a flush() has joined a job: seal those jobs, once.
                # Calls queued since then go on filling new jobs (a flush under steady
                # traffic must not cut every job short), and a flush of a long queue still
                # sends full jobs.
                self._sealed_mark = taken
                for batches in dispatch.batches:
                    dispatch.put_all(batches.due(None))
            # While closing, a partial job is sealed once the backlog has joined it.
            if not backlog:
                cutoff = None if closing else now - self._interval
                for batches in dispatch.batches:
                    dispatch.put_all(batches.due(cutoff))
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
        if self._queue.arrivals != self._seen:
            self._seen = self._queue.arrivals
            self._active_until = now + _ACTIVE
        if now < self._active_until or (
            self._dispatch.sender.busy and now - self._paused >= _SENDER_TURN
        ):
            self._paused = now
            time.sleep(_YIELD)
            now = time.perf_counter()
        self._slice = now

    def _exchange(self) -> float | None:
        """Take the answer to the request in flight, or send the outbox's next unit.

        Returns:
            As ``Dispatch.send_next``: 0.0 to go on at once, None to sleep until woken, else
            the seconds until the next unit may go.
        """
        dispatch = self._dispatch
        if dispatch.sender.busy:
            sent = dispatch.sender.take()
            return None if sent is None else dispatch.sent(sent)
        if self._stop or self._forsaken:
            return None  # closed from a callback, or forked: nothing more goes out
        return dispatch.send_next() if any(dispatch.outboxes.values()) else None

    def _step_aside(self) -> None:
        """Between the slices of a large job's outcomes: end the worker's slice if due."""
        self._turn()

    def _sleep(self, wait: float | None, now: float, deadline: float | None) -> None:
        queue, dispatch = self._queue, self._dispatch
        oldest = min((t for b in dispatch.batches if (t := b.oldest) is not None), default=None)
        if oldest is not None:
            due = max(oldest + self._interval - now, 0.0)
            wait = due if wait is None else min(wait, due)
        if deadline is not None:
            wait = max(min(wait if wait is not None else deadline, deadline - now), 0.0)
        with self._lock:
            if queue.inbox or self._stop:
                return
            # With no open job, the first new call wakes the thread: to join the next job
            # while a request is in flight, and to start its job's timer while the thread
            # waits out one endpoint's pause (the call may go to another endpoint).
            queue.idle = oldest is None
            self._wake.clear()
        if dispatch.sender.done:
            return  # the answer came before the clear: its wake-up is gone, take it now
        self._wake.wait(wait)
        self._slice = time.perf_counter()  # the GIL was free all along: a fresh slice

    def _absorb(self, item: tuple[object, ...], now: float) -> None:
        """Put one call's objects (or its record) into an open job or the outbox."""
        dispatch = self._dispatch
        seq: int = item[0]  # type: ignore[assignment]
        objects: Sequence[KlaviyoObject] = item[1]  # type: ignore[assignment]
        if len(item) > 2:
            try:
                rule = self._rule_for(item[ITEM_RULE])  # type: ignore[arg-type]
                data = encode_queued(item, rule)
                unique = unique_key(rule.metric, item[ITEM_UNIQUE_ID])  # type: ignore[arg-type]
                dispatch.add_event(seq, data, item[ITEM_IDENTITY], now, unique)  # type: ignore[arg-type]
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
                    dispatch.add_event(seq, encode_event(obj), obj.profile, now, unique)
                elif isinstance(obj, Profile):
                    dispatch.add_identify(seq, obj, link)
                elif isinstance(obj, ClientProfile):
                    # The anonymous id's link goes first (after this person's earlier
                    # events): the import waits for it, and then finds one profile.
                    body = profile_bytes(obj.profile)
                    unit = Identify(seq, body, CLIENT_PROFILES)
                    after = dispatch.after_events(obj.profile.identity)
                    link = (CLIENT_PROFILES, dispatch.put(unit, after))
                else:
                    dispatch.put_all(dispatch.subscriptions.add(obj, seq, now))
            except (KlaviyoSignalError, ValueError, TypeError) as exc:
                # A value the JSON writer refuses fails this call alone, not its batch.
                reason = f"could not encode the call: {exc}"
                failure = Failure(DeliveryStatus.FAILED, reason, None, "could not encode")
                self._outcomes.settle([seq], failure)
