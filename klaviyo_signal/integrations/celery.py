"""Celery: nothing lost when a task ends or a worker stops, and the request's context in the task.

::

    from klaviyo_signal.integrations.celery import install
    install(client)

After ``install``, for each task run by a worker:

- the request context of the code that enqueued it (``klaviyo_signal.request_context``, as
  the Django and Starlette middlewares set it) is the task's context, so a
  ``client.track(...)`` in the task carries the same identity and consent; it travels in a
  message header as JSON;
- at the end of the task (``task_postrun``, after success or failure), the client sends what
  is queued, waiting at most ``flush_timeout`` seconds;
- when a worker process stops (``worker_process_shutdown`` in a prefork child, which exits
  without running ``atexit`` hooks, and ``worker_shutdown``), the client sends what is queued.

An eager task (``task.apply()``, ``task_always_eager``) runs on the caller's thread, in the
caller's context, and is not flushed at its end: the calling process sends as usual.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import attrs
from celery import signals

from .._calls.context import CURRENT, RequestContext, make_context, using
from .._client import Client
from .._errors import ConfigurationError, ValidationError

__all__ = ["CONTEXT_HEADER", "Installation", "install"]

log = logging.getLogger("klaviyo_signal")

#: The message header the request context travels in.
CONTEXT_HEADER = "klaviyo_signal_context"


@attrs.define(eq=False)
class Installation:
    """The signal handlers ``install`` connected; ``uninstall()`` disconnects them."""

    client: Client
    app: Any
    flush_timeout: float
    propagate_context: bool
    flush_each_task: bool
    _entered: dict[str, AbstractContextManager[RequestContext | None]] = attrs.field(
        factory=dict, init=False
    )
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _connected: bool = attrs.field(default=False, init=False)

    def _connect(self) -> None:
        for signal, handler in self._handlers():
            signal.connect(handler, weak=False)
        self._connected = True

    def uninstall(self) -> None:
        """Disconnect the handlers (idempotent); tasks already running are unaffected."""
        if self._connected:
            for signal, handler in self._handlers():
                signal.disconnect(handler)
            self._connected = False

    def _handlers(self) -> Iterator[tuple[Any, Callable[..., None]]]:
        if self.propagate_context:
            yield signals.before_task_publish, self._publishing
            yield signals.task_prerun, self._starting
        yield signals.task_postrun, self._ended
        yield signals.worker_process_shutdown, self._stopping
        yield signals.worker_shutdown, self._stopping

    def _ours(self, task: Any) -> bool:
        return self.app is None or getattr(task, "app", None) is self.app

    def _publishing(self, headers: dict[str, Any] | None = None, **_: Any) -> None:
        context = CURRENT.get(None)
        if context is None or not isinstance(headers, dict):
            return
        value = _encode(context)
        headers[CONTEXT_HEADER] = value
        # Celery's message protocol 2 hands the worker only the headers nested under
        # "headers" (celery/celery#4875); both places, as the other tracing libraries do.
        nested = headers.setdefault("headers", {})
        if isinstance(nested, dict):
            nested[CONTEXT_HEADER] = value

    def _starting(self, task_id: str | None = None, task: Any = None, **_: Any) -> None:
        if task_id is None or task is None or not self._ours(task):
            return
        request = getattr(task, "request", None)
        if request is None or getattr(request, "is_eager", False):
            return  # runs in the caller's context already
        raw = _header(request)
        context = None if raw is None else _decode(raw)
        # Every worker task gets a context of its own (None without a header), so nothing
        # of one task's is seen by the next on the same thread.
        entered = using(context)
        entered.__enter__()
        with self._lock:
            self._entered[task_id] = entered

    def _ended(self, task_id: str | None = None, task: Any = None, **_: Any) -> None:
        if task is None or not self._ours(task):
            return
        with self._lock:
            entered = self._entered.pop(task_id, None) if task_id is not None else None
        if entered is not None:
            entered.__exit__(None, None, None)
        request = getattr(task, "request", None)
        if not self.flush_each_task or (
            request is not None and getattr(request, "is_eager", False)
        ):
            return
        self._flush("at the end of task %s" % getattr(task, "name", "?"))  # noqa: UP031

    def _stopping(self, **_: Any) -> None:
        self._flush("at worker shutdown")

    def _flush(self, when: str) -> None:
        try:
            done = self.client.flush(self.flush_timeout)
        except Exception:
            log.exception("klaviyo-signal: flushing %s raised", when)
            return
        if not done:
            log.warning(
                "klaviyo-signal: calls were still queued %s after flush_timeout=%g s; "
                "they stay queued (client.stats shows their outcome)",
                when,
                self.flush_timeout,
            )


def install(
    client: Client,
    *,
    app: Any = None,
    flush_timeout: float = 5.0,
    propagate_context: bool = True,
    flush_each_task: bool = True,
) -> Installation:
    """Connect the client to Celery's task and worker signals.

    Call it where the worker imports your tasks (the module that builds the Celery app),
    once per client.

    Args:
        client: The client to flush (a prefork child's client is its own after the fork).
        app: Handle only this Celery app's tasks; None: every app's.
        flush_timeout: Seconds each flush (task end, worker shutdown) may wait.
        propagate_context: Carry the enqueuing code's request context to the task.
        flush_each_task: Flush at the end of every task. False: only at worker shutdown
            (and every ``flush_interval`` as usual), for workers running many short tasks
            that should not each wait for Klaviyo's answer.

    Returns:
        The installation; ``uninstall()`` disconnects it.

    Raises:
        ConfigurationError: ``client`` is not a Client, or ``flush_timeout`` is not a
            positive number.
    """
    if not isinstance(client, Client):
        raise ConfigurationError(
            f"install: client must be a klaviyo_signal.Client, got {type(client).__name__}"
        )
    if (
        isinstance(flush_timeout, bool)
        or not isinstance(flush_timeout, (int, float))
        or not flush_timeout > 0
    ):
        raise ConfigurationError(
            f"install: flush_timeout must be a positive number of seconds, got {flush_timeout!r}"
        )
    installation = Installation(
        client, app, float(flush_timeout), propagate_context, flush_each_task
    )
    installation._connect()
    return installation


def _encode(context: RequestContext) -> str:
    fields = {
        "user_id": context.user_id,
        "anonymous_id": context.anonymous_id,
        "traits": dict(context.traits),
        "consent": dict(context.consent),
    }
    # Traits may hold a Decimal or a datetime: sent as their text, as the wire would.
    return json.dumps({k: v for k, v in fields.items() if v}, default=str)


def _header(request: Any) -> str | None:
    value = getattr(request, CONTEXT_HEADER, None)
    if value is None:
        headers = getattr(request, "headers", None)
        if isinstance(headers, dict):
            value = headers.get(CONTEXT_HEADER)
    return value if isinstance(value, str) else None


def _decode(raw: str) -> RequestContext | None:
    try:
        fields = json.loads(raw)
        return make_context(**fields, skip=_skip) if isinstance(fields, dict) else None
    except (ValueError, TypeError):
        log.warning("klaviyo-signal: a task's %s header is not readable; ignored", CONTEXT_HEADER)
        return None


def _skip(field: str, error: ValidationError) -> None:
    log.warning("klaviyo-signal: a task's request context %s breaks a rule; left out", field)
