"""Subscription jobs: queued subscribe/unsubscribe calls grouped into Klaviyo's bulk jobs.

A bulk subscription job names one list, one custom source and one import mode for all of
its profiles, so calls wait in one open job per ``Subscription.job_key``. A job is sealed
when it holds Klaviyo's per-job limit (1,000 profiles to subscribe, 100 to unsubscribe),
when its oldest call is ``flush_interval`` old, or on ``flush()``/``close()``, the same
moments an event job is sealed (``due``). A call for a profile that already waits in an
open job seals that job first, so one person's consent changes reach Klaviyo in the order
they were made (an unsubscribe after a subscribe stays the last word) and no job names one
profile twice.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from .._klaviyo.limits import MAX_SUBSCRIPTION_PROFILES
from .._klaviyo.models import Subscription
from .._klaviyo.wire import subscription_bytes

__all__ = ["SubscriptionJob", "SubscriptionJobs"]


def _who(sub: Subscription) -> tuple[tuple[str, str | None], ...]:
    """Return the identifiers by which two calls name the same profile."""
    return tuple(
        (name, value)
        for name, value in (("email", sub.email), ("phone_number", sub.phone_number))
        if value is not None
    )


class SubscriptionJob:
    """A sealed subscription job: the calls it carries, ready to send."""

    __slots__ = ("_body", "endpoint", "subs", "waiting")
    ITEMS = "/data/attributes/profiles/data"
    """Where Klaviyo's error pointers find the items (one per profile)."""

    def __init__(self, subs: list[Subscription], waiting: list[object]) -> None:
        self.subs = subs
        self.waiting = waiting
        self.endpoint = f"POST {subs[0].path}"
        self._body: bytes | None = None

    def body(self) -> bytes:
        """Return the request body (encoded once, however often it is sent)."""
        if self._body is None:
            self._body = subscription_bytes(self.subs)
        return self._body

    def owners(self) -> list[object]:
        """Return who waits for each profile, one entry per profile."""
        return list(self.waiting)

    def item_count(self) -> int:
        """How many profiles the job carries."""
        return len(self.subs)

    def owners_of(self, index: int) -> list[object]:
        """Who waits for one profile of the job."""
        return [self.waiting[index]]

    def without(self, indexes: Iterable[int]) -> SubscriptionJob:
        """Return this job minus the profiles at ``indexes``."""
        gone = set(indexes)
        keep = [i for i in range(len(self.subs)) if i not in gone]
        return SubscriptionJob([self.subs[i] for i in keep], [self.waiting[i] for i in keep])


class _Open:
    """One job being filled."""

    __slots__ = ("oldest", "subs", "waiting", "who")

    def __init__(self, now: float) -> None:
        self.oldest = now
        self.subs: list[Subscription] = []
        self.waiting: list[object] = []
        self.who: set[tuple[str, str | None]] = set()


class SubscriptionJobs:
    """The open subscription jobs, one per job key; owned by the worker thread."""

    def __init__(self) -> None:
        self._open: dict[Hashable, _Open] = {}

    @property
    def oldest(self) -> float | None:
        """When the oldest waiting call was queued, or None when none waits."""
        return min((job.oldest for job in self._open.values()), default=None)

    def add(self, sub: Subscription, owner: object, now: float) -> list[SubscriptionJob]:
        """Add one call, tagged with ``owner``; return the jobs this seals, oldest first."""
        who = _who(sub)
        sealed = [
            self._seal(key)
            for key, job in list(self._open.items())
            if any(pair in job.who for pair in who)
        ]
        key = sub.job_key
        job = self._open.get(key)
        if job is None:
            job = self._open[key] = _Open(now)
        job.subs.append(sub)
        job.waiting.append(owner)
        job.who.update(who)
        if len(job.subs) >= MAX_SUBSCRIPTION_PROFILES[sub.action]:
            sealed.append(self._seal(key))
        return sealed

    def due(self, cutoff: float | None) -> list[SubscriptionJob]:
        """Seal and return the jobs whose oldest call was queued at ``cutoff`` or before.

        Args:
            cutoff: A time from the worker's clock, or None to seal every open job.
        """
        return [
            self._seal(key)
            for key, job in list(self._open.items())
            if cutoff is None or job.oldest <= cutoff
        ]

    def _seal(self, key: Hashable) -> SubscriptionJob:
        job = self._open.pop(key)
        return SubscriptionJob(job.subs, job.waiting)
