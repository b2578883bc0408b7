"""Dispatch: sealed units waiting in an outbox per endpoint, paced, sent and retried.

The worker thread (``_delivery/worker``) puts each sealed bulk job, profile import and
subscription job into the outbox of its endpoint here, and asks for the next request when
the one in flight has been answered. Each unit goes when its endpoint's limiter
(``_delivery/ratelimit``) allows; what an answer means for each call is
``_delivery/outcomes``' business. Profile import jobs are polled here until Klaviyo has
imported them.

Ordering. Each endpoint has an outbox of its own (all subscription jobs share one), so a
429 or a server error on one endpoint pauses that outbox only. Each outbox is sent in
order; the next request is the oldest first unit of any outbox that may go. Across
outboxes only one person's identify and events are ordered: an identify waits for the
event jobs holding that person's earlier events, and an event job holding a later event
of a person whose identify still waits waits for that identify (and, being first in
its outbox, holds back the event jobs behind it until then).

Retries. The background worker owns its retries instead of leaving them to urllib3: a 429
pauses a whole endpoint, which a per-request urllib3 retry cannot, and a retry after a 5xx
or no answer goes back through the endpoint's limiter, so it counts against Klaviyo's
windows like any other request (its transport retries nothing).
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, cast

from .._blueprint.record import IdentityKey
from .._errors import APIError, BlockedByEdgeError, PermissionDeniedError, TransportError
from .._klaviyo.limits import MAX_JOB_EVENTS
from .._klaviyo.models import Identity, Profile
from .._klaviyo.transport import SERVER_ERROR_STATUSES, Answer, KlaviyoAPI
from .._klaviyo.wire import profile_bytes
from . import profile_jobs
from .delivery import DeliveryStatus
from .jobs import BulkJob, OpenJob
from .outcomes import PROFILE_IMPORT, Failure, Identify, Outcomes, Unit
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

__all__ = ["BROKEN_IN_FLIGHT", "JOIN_GRACE", "Dispatch", "seqs"]

log = logging.getLogger("klaviyo_signal")

# The time a thread gets past a request's answer timeout to end (its last bookkeeping).
JOIN_GRACE = 1.0
_MAX_BACKOFF = 30.0
# The shortest timeout a request sent during close() gets, so it can still connect.
_MIN_TIMEOUT = 0.5
# Subscribe and unsubscribe jobs share one outbox, so one person's consent changes keep
# the order they were made in across the two endpoints.
_SUBSCRIPTIONS = "subscriptions"
# The outbox name of a wait for a profile job to be imported (not only sent): see _ready.
_IMPORTED = "imported"
BROKEN_IN_FLIGHT = Failure(
    DeliveryStatus.FAILED,
    "internal error in the delivery worker while the request was in flight; Klaviyo may "
    "have received it (sending it again with the same message_id is safe)",
    None,
    "internal error",
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


def _lacks_scope(exc: APIError) -> bool:
    """Whether Klaviyo itself refused the key (a 403 from its API, not from its edge)."""
    return isinstance(exc, PermissionDeniedError) and not isinstance(exc, BlockedByEdgeError)


def seqs(owners: Iterable[object]) -> list[int]:
    """Return the calls (sequence numbers) among a unit's owners."""
    return [owner for owner in owners if type(owner) is int]


class Dispatch:
    """The outboxes of one worker, their limiters, the request in flight and its retries.

    Owned by the worker thread: only that thread calls it (``close()`` from a callback
    runs on it too).

    Args:
        make_transport: Builds the HTTP transport (on the worker thread, lazily).
        limits: Per-endpoint (burst per second, steady per minute), or None for no
            client-side limit.
        stats: The counters to update.
        outcomes: What each answer means for the calls of its unit.
        wake: Set by the sender when an answer came, to wake the worker thread.
        turn: Called between the slices of a large body, so the worker can step aside.
        clock: Monotonic seconds.
        max_retries: Attempts after a 5xx or an unanswered request before a call fails.
        answer_timeout: The longest any request waits for its answer.
        rate_store: Where every process of the account shares each endpoint's budget, or
            None: this worker paces alone.
        profile_jobs: Send identifies through bulk profile import jobs.
    """

    def __init__(
        self,
        *,
        make_transport: Callable[[], KlaviyoAPI],
        limits: RateLimits | None,
        stats: Counters,
        outcomes: Outcomes,
        wake: threading.Event,
        turn: Callable[[], None],
        clock: Callable[[], float],
        max_retries: int,
        answer_timeout: float,
        rate_store: RateStore | None,
        profile_jobs: bool,
    ) -> None:
        self.make_transport = make_transport
        self.transport: KlaviyoAPI | None = None
        self._limits = limits
        self._rate_store = rate_store
        self._stats = stats
        self._outcomes = outcomes
        self._wake = wake
        self._turn = turn
        self._clock = clock
        self._max_retries = max_retries
        self._answer_timeout = answer_timeout
        self._open = OpenJob()
        self.subscriptions = SubscriptionJobs()
        # Sealed units by endpoint (all subscription jobs share one): (order, unit, the
        # (outbox, order) it waits for or None). See "Ordering" in the module docstring.
        self.outboxes: dict[str, deque[tuple[int, Unit, tuple[str, int] | None]]] = {}
        self._order = itertools.count()
        # Identifies still in their outbox, oldest first: (order, identity).
        self._identifying: deque[tuple[int, Identity]] = deque()
        self._limiters: dict[str, EndpointLimiter] = {}
        self.in_flight: Unit | None = None
        # The request of in_flight waits for its answer here; (unit, limiter, bytes) of it.
        self.sender = Sender(wake)
        self._sending: tuple[Unit, EndpointLimiter, int] | None = None
        self.retired: list[Sender] = []  # senders left waiting by an internal error
        # Per outbox, its first unit once a try got no answer or a 5xx: Klaviyo may have it.
        self.maybe_sent: dict[str, Unit] = {}
        # Per outbox, attempts of its first unit that failed with 5xx or no answer.
        self._head_failures: dict[str, int] = {}
        self.deadline: float | None = None  # set by close(): requests then end by it
        # Background identifies through bulk profile import (until a 403 turns it off):
        # the open job; the jobs sent and not imported yet, by order; and, per identifier,
        # the order of the last unfinished job holding it.
        self._bulk_identify = profile_jobs
        self._profiles = OpenProfiles()
        self.importing: dict[int, ProfileJob] = {}
        self._imports_by_pair: dict[Pair, int] = {}

    def reset(self) -> None:
        """Forget every unit (after an internal error, once the worker ended their calls)."""
        self._open = OpenJob()
        self.subscriptions = SubscriptionJobs()
        self.outboxes.clear()
        self._identifying.clear()
        self._profiles = OpenProfiles()
        self.importing.clear()
        self._imports_by_pair.clear()
        self.in_flight = None
        self.maybe_sent.clear()
        self._head_failures.clear()

    @property
    def batches(self) -> tuple[_Batches, ...]:
        # Profile jobs before subscription jobs: an identify's import goes before the
        # subscription its trait made.
        return (self._open, self._profiles, self.subscriptions)

    def end_in_flight(self, owners: frozenset[object]) -> None:
        """Wait for the answer to the request in flight and end its calls (``owners``) by it.

        Without an answer within the answer timeout they end ``failed``: Klaviyo may have
        them.
        """
        if self.sender.busy:
            sent = self.sender.take(self._answer_timeout + JOIN_GRACE)
            if sent is None:
                # The sender keeps waiting for its answer, then ends; close() joins it.
                self.sender.stop()
                self.retired = [old for old in self.retired if not old.stop()]
                self.retired.append(self.sender)
                self.sender = Sender(self._wake)
            else:
                try:
                    self.sent(sent)
                except Exception:
                    log.exception("klaviyo-signal: a request's answer could not be recorded")
        if self._sending is not None:
            self._sending[1].end(None)  # the endpoint no longer counts it in flight
            self._sending = None
        # Any of them the answer left open (a retry due, items to resend) ends now.
        self._outcomes.settle(
            [seq for seq in owners if isinstance(seq, int)], BROKEN_IN_FLIGHT, whole=True
        )

    # -- the outboxes and their order ------------------------------------------------------

    def add_identify(self, seq: int, profile: Profile, link: tuple[str, int] | None = None) -> None:
        """Queue a profile import after the call's own anonymous-id ``link`` (which waits
        for this person's earlier event jobs), or else after those jobs."""
        identity = profile.identity
        after = link if link is not None else self.after_events(identity)
        if self._bulk_identify and self._profiles.fits(profile):
            self._add_to_profile_job(seq, profile, after)
            return
        order = self.put(Identify(seq, profile_bytes(profile)), after)
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
                self.put(self._profiles.seal())
            return
        self.put(self._profiles.seal())  # the person's other version goes first
        earlier = self._imported_before(pairs_of(profile.identity))
        self._profiles.add(profile, seq, now, [*waits, *earlier])

    def _imported_before(self, pairs: Iterable[Pair]) -> list[tuple[str, int]]:
        """Return a wait for the last unfinished profile job holding one of ``pairs``."""
        found = self._imports_by_pair
        latest = max((found.get(pair, -1) for pair in pairs), default=-1)
        return [(_IMPORTED, latest)] if latest >= 0 else []

    def after_events(self, identity: Identity) -> tuple[str, int] | None:
        """Seal the open job if it holds this person's events; return the last event job
        of theirs still waiting, for a profile write to wait for."""
        if self._open.mentions(identity):
            # Events of this person queued before the identify go first, so a later
            # bulk job cannot overwrite what the identify set.
            self.put(self._open.seal())
        after = None
        for order, job, _ in reversed(self.outboxes.get(BulkJob.endpoint, ())):
            if cast(BulkJob, job).mentions(identity):
                after = (BulkJob.endpoint, order)  # the last job with their earlier events
                break
        return after

    def put(self, unit: Unit, after: tuple[str, int] | None = None) -> int:
        """Queue a sealed unit at the end of its endpoint's outbox; return its order."""
        if type(unit) is SubscriptionJob and len(self._profiles):
            who = [("email", s.email) for s in unit.subs if s.email is not None]
            who += [("phone_number", s.phone_number) for s in unit.subs if s.phone_number]
            if self._profiles.mentions_any(who):
                self.put(self._profiles.seal())  # the identify's import goes first
        if after is None and type(unit) is BulkJob:
            # After a fallback every identify, a converted job's too, is a profile import.
            if self._identifying and not self._bulk_identify:
                after = self._identify_before(unit)
            if after is None and (self._imports_by_pair or len(self._profiles)):
                after = self._import_before(unit)
            if after is None and self._identifying:
                after = self._identify_before(unit)
        key = _outbox_of(unit)
        outbox = self.outboxes.get(key)
        if outbox is None:
            outbox = self.outboxes[key] = deque()
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
            self.put(self._profiles.seal())
        waits = self._imported_before(who)
        return waits[0] if waits else None

    def put_all(self, units: Iterable[Unit]) -> None:
        for unit in units:
            self.put(unit)

    def _identify_before(self, job: BulkJob) -> tuple[str, int] | None:
        """Return the last identify still waiting for a person of ``job``, if any."""
        outbox = self.outboxes.get(PROFILE_IMPORT)
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
        outbox = self.outboxes.get(after[0])
        return not outbox or outbox[0][0] > after[1]

    def _imported(self, order: int) -> bool:
        """Whether every profile job up to ``order`` has ended (imported, failed, resent)."""
        outbox = self.outboxes.get(PROFILE_JOBS)
        if outbox and outbox[0][0] <= order:
            return False
        for earlier in [o for o in self.importing if o <= order]:
            job = self.importing[earlier]
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

    def add_event(
        self, seq: int, data: bytes, profile: Profile | IdentityKey, now: float, unique: str
    ) -> None:
        if self._open.add(data, profile, seq, now, unique):
            if self._open.events >= MAX_JOB_EVENTS:
                self.put(self._open.seal())
            return
        if self._open.events:
            self.put(self._open.seal())
            if self._open.add(data, profile, seq, now, unique):
                return
        reason = "the event alone is over Klaviyo's 5 MB request limit"
        self._outcomes.settle([seq], Failure(DeliveryStatus.FAILED, reason, None, "too large"))

    # -- sending: pacing and retries -------------------------------------------------------

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
                lease = 2 * (self._answer_timeout + JOIN_GRACE)
                limiter = self._rate_store.limiter(
                    endpoint, burst, steady, lease=lease, clock=self._clock
                )
            self._limiters[endpoint] = limiter
        return limiter

    def send_next(self) -> float | None:
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
        for outbox in self.outboxes.values():
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
        if self.transport is None:
            self.transport = self.make_transport()
        # A full job's body is put together in slices; the others are small or encoded already.
        body = unit.body(self._turn) if type(unit) is BulkJob else unit.body()
        timeout = self._answer_timeout
        if self.deadline is not None:
            timeout = min(timeout, max(self.deadline - self._clock(), _MIN_TIMEOUT))
        limiter.begin()
        self.in_flight = unit
        self._sending = (unit, limiter, len(body))
        if type(unit) is Poll:
            request = functools.partial(
                self.transport.get, unit.path(), endpoint=endpoint, timeout=timeout
            )
        else:
            path = endpoint.split(" ", 1)[1]
            request = functools.partial(self.transport.post, path, body, timeout=timeout)
        self.sender.post(request)
        sent = self.sender.take()
        return None if sent is None else self.sent(sent)

    def sent(self, sent: Sent) -> float:
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
            self._outcomes.settle(owners, BROKEN_IN_FLIGHT, whole=True)
            raise
        else:
            limiter.end(answer.headers)
            self._stats.request(size)
            # What follows a profile job's answer (polling, profile imports instead) once
            # the unit left its outbox: it needs the unit's order.
            rest, then = None, self._accepted(unit, answer)
        finally:
            self.in_flight = None
        key = _outbox_of(unit)
        outbox = self.outboxes[key]
        order = outbox.popleft()[0]  # the unit in flight is its outbox's first
        self._job_moved(unit, then, rest, order)
        waiting = self._identifying
        while waiting and waiting[0][0] <= order and type(unit) is Identify:
            waiting.popleft()  # identifies end in order: this one is the oldest
        self._head_failures.pop(key, None)
        self.maybe_sent.pop(key, None)
        if rest is not None:
            # The items Klaviyo did not object to go again, first in line, in its place.
            self._stats.retry()
            outbox.appendleft((order, rest, None))
        return 0.0

    def _retry_head(self, limiter: EndpointLimiter, retry_after: float | None) -> bool:
        """Schedule the unit in flight again after a 5xx or no answer; False when retries ran out.

        The endpoint's limiter pauses it with backoff (see "Retries" above); other outboxes
        go on.
        """
        unit = cast(Unit, self.in_flight)  # still set while sent() reads the answer
        key = _outbox_of(unit)
        failures = self._head_failures.get(key, 0)
        if failures >= self._max_retries:
            return False
        failures = self._head_failures[key] = failures + 1
        self.maybe_sent[key] = unit
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
        self.importing[job.order] = job
        if job_id is None:
            reason = (
                "Klaviyo accepted the profile import job but its answer named no job id, so "
                "whether it imported the profile cannot be known"
            )
            self._end_job(job, Failure(DeliveryStatus.FAILED, reason, answer.status, "no job id"))
            return
        job.job_id, job.accepted_at = job_id, now
        self.put(Poll(job, JOB_STATUS, now + profile_jobs.FIRST_POLL))

    def _polled(self, poll: Poll, answer: Answer, _order: int) -> None:
        """Read a job's status or a page of its import errors; poll on, or end its calls."""
        job = poll.job
        now = self._clock()
        if poll.endpoint == IMPORT_ERRORS:
            cursor = job.record_errors(answer.body)
            if cursor is not None:
                self.put(Poll(job, IMPORT_ERRORS, now, cursor))
            else:
                self._job_imported(job)
            return
        _, status, failed = job_of(answer.body)
        job.status = status or "unknown"
        job.polls += 1
        if status == "complete":
            if failed:
                self.put(Poll(job, IMPORT_ERRORS, now))
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
            self.put(Poll(job, JOB_STATUS, now + pause))

    def _job_imported(self, job: ProfileJob) -> None:
        """End each call of an imported job: failed where Klaviyo refused its profile."""
        for index, detail in sorted(job.failures.items()):
            reason = f"Klaviyo refused the profile in import job {job.job_id}: {detail}"
            failure = Failure(DeliveryStatus.FAILED, reason, None, "import error")
            self._outcomes.settle(seqs(job.owners_of(index)), failure)
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
        self._outcomes.settle(seqs(job.owners()), failure)
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
        self.importing.pop(job.order, None)
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
        jobs = {job.order: job for job in self.importing.values() if job.fallback_order is None}
        jobs[failed.order] = failed
        waiting = self.outboxes.get(PROFILE_JOBS, deque())
        for _, unit, _ in waiting:
            job = cast(ProfileJob, unit)
            jobs[job.order] = job
        waiting.clear()
        for key in (JOB_STATUS, IMPORT_ERRORS):
            polls = self.outboxes.get(key)
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
                last = self.put(unit)
                self._identifying.append((last, profile.identity))
            if last is None:
                self._finish(job)
                continue
            job.fallback_order = last
            self.importing[job_order] = job
