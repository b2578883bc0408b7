"""Outcomes of calls: the Delivery a caller holds, and how a queued one learns its end.

Every call ends in exactly one final ``Delivery``: ``delivered``, ``dropped`` or ``failed``.
Background mode hands back a ``queued`` Delivery at once; ``Delivery.wait()`` gives the
final one, and ``await delivery`` gives it inside a coroutine without blocking the event
loop (the worker thread resolves an asyncio future through ``call_soon_threadsafe``).
Sync mode sends a call at once (``_delivery/sync.py``); background mode hands it to the
worker (``_delivery/worker.py``), which batches.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import threading
from collections.abc import Callable, Generator, Sequence
from typing import Any, cast

import attrs

__all__ = [
    "Board",
    "Delivery",
    "DeliveryStatus",
    "Final",
    "OnDelivery",
    "Ticket",
]

log = logging.getLogger("klaviyo_signal")


class DeliveryStatus(str, enum.Enum):
    """Where a call stands. Only ``queued`` is not final."""

    QUEUED = "queued"
    DELIVERED = "delivered"
    DROPPED = "dropped"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


Final = tuple["DeliveryStatus", "str | None", "int | None"]
"""A call's final status, reason and HTTP status: atoms only (see ``Board``)."""


class Board:
    """Where the worker posts final outcomes for the Tickets still held.

    A queued call is known to the worker by a sequence number, not by an object (why:
    ``_blueprint/record``). Outcomes are kept
    only for calls whose Delivery someone still holds (``alive``); a Ticket removes its
    own when it is dropped.
    """

    __slots__ = ("alive", "finals", "listeners", "pid", "signal", "warned")

    def __init__(self) -> None:
        self.signal = threading.Condition()
        self.alive: set[int] = set()
        self.finals: dict[int, Final] = {}
        # Calls awaited in a coroutine: each is told its outcome once, on the worker thread.
        self.listeners: dict[int, list[Callable[[Final], None]]] = {}
        # A forked child inherits the parent's Tickets but not the worker that ends them.
        self.pid = os.getpid()
        self.warned = False

    def post(self, finals: Sequence[tuple[int, Final]]) -> None:
        """Record the outcomes of calls that became final and wake the waiters once."""
        alive = self.alive
        with self.signal:
            for seq, final in finals:
                if seq in alive:
                    self.finals[seq] = final
                    if seq not in alive:  # its Ticket went away meanwhile
                        self.finals.pop(seq, None)
                if self.listeners:
                    for listener in self.listeners.pop(seq, ()):
                        listener(final)
            self.signal.notify_all()


class Ticket:
    """The handle a queued Delivery keeps to learn its final outcome from the Board."""

    __slots__ = ("_board", "_message_id", "_seq")

    def __init__(self, board: Board, seq: int, message_id: str) -> None:
        self._board = board
        self._seq = seq
        self._message_id = message_id
        board.alive.add(seq)

    def __del__(self) -> None:
        # Set and dict operations are atomic: no lock, so this is safe on any thread,
        # inside a garbage collection or at interpreter exit.
        board = getattr(self, "_board", None)
        if board is not None:
            board.alive.discard(self._seq)
            board.finals.pop(self._seq, None)

    def __copy__(self) -> Ticket:
        return self  # one call, one ticket: a copied Delivery waits on the same call

    def __deepcopy__(self, memo: object) -> Ticket:
        return self

    def wait(self, timeout: float | None) -> Delivery | None:
        """Return the final outcome, or None if ``timeout`` passes first.

        In a forked child, a call queued by the parent returns at once, still queued,
        with a reason: only the parent's worker can end it (and the child never learns
        how), and the parent's lock may be held forever in the child.
        """
        board, seq = self._board, self._seq
        if board.pid != os.getpid():
            reason = (
                f"queued in process {board.pid}: a forked child cannot wait for its "
                "parent's calls (the parent sends them)"
            )
            if not board.warned:
                board.warned = True
                log.warning("klaviyo-signal: Delivery.wait() in a forked child: %s", reason)
            return Delivery(self._message_id, DeliveryStatus.QUEUED, reason)
        with board.signal:
            board.signal.wait_for(lambda: seq in board.finals, timeout)
            final = board.finals.get(seq)
        return None if final is None else Delivery(self._message_id, *final)

    async def settled(self) -> Delivery:
        """Return the final outcome once the worker posts it, without blocking the loop.

        In a forked child, a call queued by the parent comes back at once, as ``wait``
        says.
        """
        # Imported on first use: most processes never await a Delivery.
        import asyncio  # noqa: PLC0415

        board, seq = self._board, self._seq
        if board.pid != os.getpid():
            return cast(Delivery, self.wait(0.0))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Final] = loop.create_future()

        def resolve(final: Final) -> None:
            # On the worker thread, under the Board's lock: hand over, never wait here.
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                loop.call_soon_threadsafe(_resolve, future, final)

        with board.signal:
            final = board.finals.get(seq)
            if final is None:
                board.listeners.setdefault(seq, []).append(resolve)
        if final is None:
            try:
                final = await future
            finally:
                with board.signal:
                    waiting = board.listeners.get(seq, [])
                    if resolve in waiting:
                        waiting.remove(resolve)
                        if not waiting:
                            del board.listeners[seq]
        return Delivery(self._message_id, *final)


def _resolve(future: Any, final: Final) -> None:
    if not future.done():  # not cancelled meanwhile
        future.set_result(final)


@attrs.frozen
class Delivery:
    """The outcome of one identify, track, page, subscribe or unsubscribe call.

    Attributes:
        message_id: The call's id; also the Klaviyo event's ``unique_id``.
        status: queued, delivered, dropped or failed.
        reason: Why it was dropped or failed (None when delivered, and when queued except
            for a parent's call waited on in a forked child, see ``wait``).
        http_status: Klaviyo's HTTP status, when a request was answered.
    """

    message_id: str
    status: DeliveryStatus
    reason: str | None = None
    http_status: int | None = None
    _ticket: Ticket | None = attrs.field(default=None, eq=False, repr=False, alias="ticket")

    def wait(self, timeout: float | None = None) -> Delivery:
        """Return the final Delivery, waiting for the background worker if needed.

        Returns this Delivery itself when it is already final, or still ``queued`` when
        ``timeout`` seconds pass first. In a forked child, a call its parent queued comes
        back at once, still ``queued``, with a ``reason`` naming the parent process.
        """
        if self._ticket is None or self.status is not DeliveryStatus.QUEUED:
            return self
        return self._ticket.wait(timeout) or self

    def __await__(self) -> Generator[Any, None, Delivery]:
        """``await delivery``: the final Delivery, without blocking the event loop.

        A final Delivery (every one in sync mode) resolves at once. There is no timeout
        of its own: wrap it in ``asyncio.wait_for`` or ``asyncio.timeout``; a cancelled
        wait leaves the call queued, and it is still sent.
        """
        return self._settled().__await__()

    async def _settled(self) -> Delivery:
        if self._ticket is None or self.status is not DeliveryStatus.QUEUED:
            return self
        return await self._ticket.settled()

    @classmethod
    def queued(cls, message_id: str, ticket: Ticket) -> Delivery:
        """Return ``Delivery(message_id, DeliveryStatus.QUEUED, ticket=ticket)``, built fast.

        Every background call returns one on the caller's thread; a frozen class's
        ``__init__`` sets each field through ``object.__setattr__``, which cost more
        than the rest of the Delivery's part of the call. The slots are written directly.
        """
        delivery = _new(cls)
        _set_message_id(delivery, message_id)
        _set_status(delivery, DeliveryStatus.QUEUED)
        _set_reason(delivery, None)
        _set_http_status(delivery, None)
        _set_ticket(delivery, ticket)
        return delivery


_new = object.__new__
_set_message_id = Delivery.__dict__["message_id"].__set__
_set_status = Delivery.__dict__["status"].__set__
_set_reason = Delivery.__dict__["reason"].__set__
_set_http_status = Delivery.__dict__["http_status"].__set__
_set_ticket = Delivery.__dict__["_ticket"].__set__


OnDelivery = Callable[[Delivery], object]
