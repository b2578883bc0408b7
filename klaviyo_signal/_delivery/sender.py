"""The worker's one request in flight, waited for on a thread of its own.

Klaviyo takes milliseconds to read a 1,000-event job and answer. A worker that waited for
each answer itself sat idle that long between jobs, with the next job's calls queued and
unbuilt. The Sender runs one ``KlaviyoAPI.post`` at a time on its own thread and keeps the
outcome (the answer, or the error) until the worker takes it; the worker meanwhile builds
the next job. Everything else (limits, retries, outcomes, ordering) stays on the worker
thread, which never hands over a second request before it has taken the first's outcome.

Where no thread can start (interpreter shutdown), the request is sent inline.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple

from .._klaviyo.transport import Answer

__all__ = ["Sender", "Sent"]


class Sent(NamedTuple):
    """The outcome of one request: its answer, or the exception it raised."""

    answer: Answer | None
    error: Exception | None


def _attempt(send: Callable[[], Answer]) -> Sent:
    try:
        return Sent(send(), None)
    except Exception as exc:
        return Sent(None, exc)
    except BaseException as exc:  # the worker must hear of it, or it waits forever
        return Sent(None, RuntimeError(f"the request stopped: {exc!r}"))


class Sender:
    """Sends one request at a time from a thread started at the first request.

    Args:
        wake: Set when a request's outcome is ready, to wake the worker.
    """

    def __init__(self, wake: threading.Event) -> None:
        self._wake = wake
        self._cond = threading.Condition()
        self._job: Callable[[], Answer] | None = None
        self._outcome: Sent | None = None
        self._busy = False
        self._stop = False
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        """Whether a request was handed over and its outcome not yet taken."""
        return self._busy

    @property
    def done(self) -> bool:
        """Whether the request's outcome is ready to take."""
        return self._outcome is not None

    def post(self, send: Callable[[], Answer]) -> None:
        """Start ``send`` (one ``KlaviyoAPI.post``); inline when no thread can start."""
        self._busy = True
        if self._thread is None:
            thread = threading.Thread(target=self._run, name="klaviyo-signal-sender", daemon=True)
            try:
                thread.start()
            except RuntimeError:
                self._outcome = _attempt(send)
                return
            self._thread = thread
        with self._cond:
            self._job = send
            self._cond.notify()

    def take(self, timeout: float | None = 0.0) -> Sent | None:
        """Return the request's outcome once it is ready (waiting up to ``timeout`` s)."""
        if self._outcome is None and timeout != 0.0:
            with self._cond:
                self._cond.wait_for(lambda: self._outcome is not None, timeout)
        outcome = self._outcome
        if outcome is not None:
            self._outcome = None
            self._busy = False
        return outcome

    def stop(self, timeout: float | None = None) -> bool:
        """Let the thread end after its request; wait up to ``timeout`` s (None: do not).

        Returns:
            Whether no sender thread is left running.
        """
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        thread = self._thread
        if thread is None:
            return True
        if timeout is not None and thread is not threading.current_thread():
            thread.join(timeout)
        return not thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._job is not None or self._stop)
                send, self._job = self._job, None
                if send is None:
                    return
            outcome = _attempt(send)
            with self._cond:
                self._outcome = outcome
                self._cond.notify_all()
            self._wake.set()
