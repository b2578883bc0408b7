"""asyncio without a second HTTP stack: the blocking waits run on a thread of their own.

The worker already sends from its thread; what blocks a coroutine is waiting for it
(``flush``, ``close``) or a sync-mode call's request. Each runs on a short-lived daemon
thread that hands its result to the loop through ``call_soon_threadsafe``: not the loop's
default executor, which the application's own blocking work may have filled.
Nothing here imports asyncio until a coroutine runs.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncio

__all__ = ["off_loop", "running_loop"]

T = TypeVar("T")


def running_loop() -> asyncio.AbstractEventLoop | None:
    """Return the event loop running on this thread, or None (cheap when asyncio is unused)."""
    module = sys.modules.get("asyncio")
    if module is None:
        return None
    loop: asyncio.AbstractEventLoop | None = module.events._get_running_loop()
    return loop


async def off_loop(fn: Callable[[], T], name: str) -> T:
    """Run the blocking ``fn`` on a thread of its own; the loop carries on meanwhile.

    A cancelled await does not stop ``fn``: it finishes on its thread, and its result
    is dropped.
    """
    import asyncio  # noqa: PLC0415 - only processes that run coroutines pay for it

    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (fn(), None)
        except BaseException as exc:  # the awaiting coroutine must hear of it
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
            loop.call_soon_threadsafe(_settle, future, *outcome)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await future


def _settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if future.done():  # cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
