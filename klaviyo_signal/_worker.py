"""The background worker: a bounded queue and one daemon thread that sends jobs in order.

Nothing starts before the first job is submitted, and the caller never waits on the
network: a full queue refuses the job at once.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import cast

from ._delivery import Job

__all__ = ["Worker"]

_STOP = object()


class Worker:
    """Sends submitted jobs one by one on a background thread."""

    def __init__(self, send: Callable[[Job], None], *, max_queue_size: int) -> None:
        self._send = send
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queue_size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, job: Job) -> bool:
        """Queue a job without blocking; return False when the queue is full or closed."""
        if self._closed:
            return False
        if self._thread is None:
            self._start()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            return False
        return True

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="klaviyo-signal-worker", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self._send(cast(Job, item))
            finally:
                self._queue.task_done()

    def pending(self) -> int:
        """Return how many jobs are queued or being sent."""
        return self._queue.unfinished_tasks

    def flush(self, timeout: float | None) -> bool:
        """Wait until every submitted job is sent; False if ``timeout`` passes first."""
        done = self._queue.all_tasks_done
        with done:
            return done.wait_for(lambda: self._queue.unfinished_tasks == 0, timeout)

    def close(self, timeout: float | None) -> bool:
        """Flush, then stop the thread; return False if jobs were left unsent."""
        flushed = self.flush(timeout)
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive() and flushed:
            self._queue.put(_STOP)
            thread.join(timeout)
        return flushed
