"""Client-side rate limits per endpoint: a sliding log of when requests completed.

Klaviyo counts each endpoint's requests in fixed 1-second (burst) and 1-minute (steady)
windows whose edges the client cannot see. A token bucket may spend twice its size across
such an edge, so this keeps a log instead: a request may start only when fewer than
``limit`` requests completed in the ``span`` before now (plus those still in flight).
Times are taken when a request *completes*, the latest moment Klaviyo can have received it,
so a slow upload cannot push two requests into one of Klaviyo's windows: if request k starts
at least ``span`` after request k - limit completed, Klaviyo received them at least ``span``
apart, and no window of that length holds more than ``limit``.

``RateLimit-Remaining``/``RateLimit-Reset`` answers correct the log when other senders share
the account's quota; a 429 pauses the whole endpoint for ``Retry-After``.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping

from .._klaviyo.revisions import DEFAULT_REVISION, revision

__all__ = [
    "BURST_SPAN",
    "STEADY_SPAN",
    "EndpointLimiter",
    "RateLimits",
    "budget_of",
    "published_limits",
]

RateLimits = Mapping[str, tuple[int, int]]
"""``{"POST /api/event-bulk-create-jobs": (burst per second, steady per minute)}``."""

BURST_SPAN = 1.0
STEADY_SPAN = 60.0
# Klaviyo's clock and ours tick apart by a little: keep requests this much further apart.
_MARGIN = 1.01
# Backoff after a 429 without Retry-After: 1 s, doubling, up to this.
_MAX_BACKOFF = 60.0


def published_limits(revision_name: str = DEFAULT_REVISION) -> dict[str, tuple[int, int]]:
    """Return Klaviyo's published (burst per second, steady per minute) limit per endpoint
    under ``revision_name``."""
    return revision(revision_name).limits()


class EndpointLimiter:
    """Paces one endpoint: at most ``burst`` per burst span and ``steady`` per steady span.

    Not thread-safe by itself: the worker thread owns it.

    Args:
        burst: Requests allowed in any span of ``spans[0]`` seconds; None: no limit
            (a 429 still pauses the endpoint).
        steady: Requests allowed in any span of ``spans[1]`` seconds; None: no limit.
        clock: Monotonic seconds; tests pass a fake clock.
        spans: The window lengths (1 s and 60 s, as Klaviyo counts).
    """

    def __init__(
        self,
        burst: int | None,
        steady: int | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        spans: tuple[float, float] = (BURST_SPAN, STEADY_SPAN),
    ) -> None:
        self._windows = tuple(
            (span * _MARGIN, limit)
            for span, limit in zip(spans, (burst, steady), strict=True)
            if limit is not None
        )
        self._clock = clock
        # Only the newest max(limit) completions can ever decide a wait.
        self._log: deque[float] = deque(maxlen=max((n for _, n in self._windows), default=0))
        self._in_flight = 0
        self._paused_until = -math.inf
        self._budget = math.inf
        self._budget_until = -math.inf
        self._throttles = 0

    def delay(self) -> float:
        """Return how many seconds to wait before the next request may start (0: now)."""
        now = self._clock()
        wait = self._paused_until - now
        if self._budget_until > now and self._budget <= 0:
            wait = max(wait, self._budget_until - now)
        log = self._log
        for span, limit in self._windows:
            busy = self._in_flight
            if busy >= limit:
                # In-flight requests free a slot only once they complete and age out.
                wait = max(wait, span)
                continue
            # The completion that must age out before one more fits: the (limit - busy)-th
            # newest. Before it ages out, it and the newer ones already fill the span.
            need = limit - busy
            if len(log) >= need:
                wait = max(wait, log[-need] + span - now)
        return max(wait, 0.0)

    def begin(self) -> None:
        """Count a request that starts now as in flight."""
        self._in_flight += 1
        if self._budget_until > self._clock():
            self._budget -= 1

    def end(self, headers: Mapping[str, str] | None = None, *, throttled: bool = False) -> None:
        """Log a request as completed now, and learn from its ``RateLimit-*`` headers."""
        now = self._clock()
        self._in_flight = max(self._in_flight - 1, 0)
        self._log.append(now)
        if not throttled:
            self._throttles = 0
        if headers:
            self._observe(headers, now)

    def throttle(self, retry_after: float | None) -> float:
        """Pause the whole endpoint after a 429; return the pause in seconds.

        Args:
            retry_after: Klaviyo's ``Retry-After`` in seconds, or None when it sent none
                (then: 1 s, doubling with each 429 in a row, up to 60 s, with jitter).
        """
        self._throttles += 1
        if retry_after is None or retry_after < 0:
            backoff = min(_MAX_BACKOFF, 2.0 ** (self._throttles - 1))
            pause = backoff * (0.5 + random.random() / 2)  # jitter, not a secret
        else:
            pause = retry_after
        self._paused_until = max(self._paused_until, self._clock() + pause)
        return pause

    def _observe(self, headers: Mapping[str, str], now: float) -> None:
        budget = budget_of(headers)
        if budget is None:
            return
        # Whichever window Klaviyo describes, at most `remaining` more fit before it resets;
        # this catches other senders sharing the account's quota.
        self._budget, reset = budget
        self._budget_until = now + reset


def budget_of(headers: Mapping[str, str]) -> tuple[float, float] | None:
    """Return (``RateLimit-Remaining``, ``RateLimit-Reset`` seconds) of an answer, or None."""
    remaining = _number(_header(headers, "ratelimit-remaining"))
    reset = _number(_header(headers, "ratelimit-reset"))
    if remaining is None or reset is None:
        return None
    return remaining, reset


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for key, found in headers.items():
        if key.lower() == name:
            return found
    return None


def _number(value: str | None) -> float | None:
    """Read the first number of a header (``10`` or the draft's ``10, 10;w=1``)."""
    if value is None:
        return None
    head = value.split(",", 1)[0].split(";", 1)[0].strip()
    try:
        number = float(head)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None
