"""Flush at the end of a unit of work: ``Client.flushing`` and ``Client.flush_after``.

A Lambda invocation, a Cloud Run request, a Celery task or a script's main function ends
and the process may freeze or stop before the worker's next bulk job: these flush within a
budget when the unit ends, and say (one WARNING line, and a ``FlushReport``) how many
calls did not make it.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar, cast

import attrs

from ._errors import ConfigurationError
from ._errors import shown as _shown

__all__ = ["FlushReport", "Flushing", "checked_budget", "flush_after"]

log = logging.getLogger("klaviyo_signal")

F = TypeVar("F", bound=Callable[..., Any])


@attrs.define
class FlushReport:
    """What the flush at the end of a ``flushing()`` block left unsent.

    Attributes:
        timeout: The flush's budget in seconds.
        flushed: True when every queued call was final in time; None until the block ends.
        left: Calls still queued or in flight when the budget ran out (they stay queued
            and are sent later, if the process runs on).
    """

    timeout: float
    flushed: bool | None = None
    left: int = 0


def checked_budget(timeout: object) -> float:
    """Return a flush budget, or raise ConfigurationError naming the rule."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ConfigurationError(
            f"timeout: the flush budget must be a number of seconds above 0, got {_shown(timeout)}"
        )
    return float(timeout)


class Flushing:
    """A (sync or async) context manager that flushes when its block ends, within a budget.

    Args:
        flush: The Client's ``flush``.
        aflush: The Client's ``aflush``.
        pending: How many calls are queued or in flight now.
        timeout: The budget in seconds.
        what: Names the unit of work in the warning (a function's name, or the block).
    """

    def __init__(
        self,
        flush: Callable[[float], bool],
        aflush: Callable[[float], Awaitable[bool]],
        pending: Callable[[], int],
        timeout: float,
        what: str = "the flushing() block",
    ) -> None:
        self._flush = flush
        self._aflush = aflush
        self._pending = pending
        self._what = what
        self.report = FlushReport(timeout)

    def __enter__(self) -> FlushReport:
        return self.report

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._ended(self._flush(self.report.timeout))

    async def __aenter__(self) -> FlushReport:
        return self.report

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._ended(await self._aflush(self.report.timeout))

    def _ended(self, flushed: bool) -> None:
        report = self.report
        report.flushed = flushed
        report.left = 0 if flushed else self._pending()
        if not flushed:
            # One line per unit of work, however many calls it left.
            log.warning(
                "klaviyo-signal: %d call(s) were not final within the %g s flush budget at "
                "the end of %s (not sent yet, or, for an identify, sent and not yet confirmed "
                "imported by Klaviyo); they carry on if the process runs on (raise the "
                "timeout, or see client.stats)",
                report.left,
                report.timeout,
                self._what,
            )


def flush_after(make: Callable[[str], Flushing], fn: F) -> F:
    """Wrap a sync or async function so each call flushes when it returns or raises."""
    what = f"{getattr(fn, '__qualname__', repr(fn))}()"
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            async with make(what):
                return await fn(*args, **kwargs)

        return cast(F, async_wrapper)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with make(what):
            return fn(*args, **kwargs)

    return cast(F, wrapper)
