"""The durable outbox: queued calls kept in a SQLite file until Klaviyo has answered them.

Opt-in (``Client(outbox=path)``). A call is committed to the file before the caller gets
its ``queued`` Delivery, the worker sends it from memory as usual, and its row is deleted
once the call is final by Klaviyo's answer (delivered, or a failure Klaviyo gave or that no
retry can change). A call the process could not finish (killed, or closed before
``shutdown_timeout`` let it send) stays in the file, and the next process that opens the
outbox sends it. Every event carries its ``unique_id``, so a call sent again after a crash
is recorded once by Klaviyo.

Several processes may share one file (the workers of a forking server, a restart that
overlaps the old process). Each opened outbox holds a *slot*: one byte of the side file
``path + ".lock"``, locked with ``fcntl.lockf``, which the kernel releases when the process
ends, even by SIGKILL, and which a forked child does not inherit. Each row carries the slot
of the process that wrote it, and only that process sends it; a process that opens the
outbox takes over, in one transaction, the rows of every slot no live process holds. So
each row has exactly one sender at a time, and no two processes send the same row.

SQLite runs in WAL mode with ``synchronous=NORMAL``: a commit reaches the operating system
before the call returns (it survives the process dying, however it dies) but is not forced
to the disk, so a power loss or kernel crash may lose the last calls (never corrupt the
file). The caller's write is one small transaction; deletes are batched per answered
request, and the worker checkpoints the log on a connection of its own, so no caller waits
for a disk sync.

Records are pickles of the queue item (the blueprint's objects, or a simple call's packed
fields), read back by an unpickler that resolves only this package's models and the
standard value types (``datetime``, ``Decimal``), so a file written by someone else cannot
make the process run code.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import pickle
import sqlite3
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from .._errors import ConfigurationError

__all__ = ["Outbox", "Record", "dump_fields", "dump_objects", "load"]

log = logging.getLogger("klaviyo_signal")

_FORMAT = "1"
# How long a write waits for another process's transaction on the same file.
_BUSY_TIMEOUT = 5.0
# Rows deleted between two checkpoints of the write-ahead log.
_CHECKPOINT_EVERY = 2000
_MAX_SLOTS = 1 << 16
_DELETE_SLICE = 100
_LOG_LIMIT = 4 << 20
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS calls (id INTEGER PRIMARY KEY, slot INTEGER NOT NULL, "
    "rec BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)

Record = tuple[str, int, bool, tuple[object, ...], tuple[object, ...] | None]
"""A queued call as stored: message id, queue bytes, whether the caller named it, the
blueprint's objects, and a simple call's packed fields (or None)."""


def _proxy(mapping: dict[str, object]) -> Mapping[str, object]:
    """Rebuild a read-only mapping (a model's shared empty properties) from a pickle."""
    return MappingProxyType(mapping)


def _reduce_proxy(mapping: MappingProxyType[str, object]) -> tuple[object, ...]:
    return (_proxy, (dict(mapping),))


_DISPATCH: dict[type, Any] = {MappingProxyType: _reduce_proxy}


def dump_fields(message_id: str, size: int, named: bool, fields: tuple[object, ...]) -> bytes:
    """Return the record of a simple call (``_blueprint.events.pack``'s layout)."""
    try:
        # Strings, numbers, None and plain dicts: the C pickler alone.
        return pickle.dumps((message_id, size, named, (), fields), pickle.HIGHEST_PROTOCOL)
    except (TypeError, pickle.PicklingError):
        return _dump((message_id, size, named, (), fields))


def dump_objects(message_id: str, size: int, named: bool, objects: Sequence[object]) -> bytes:
    """Return the record of a call the blueprint made objects of."""
    return _dump((message_id, size, named, tuple(objects), None))


def _dump(record: tuple[object, ...]) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _DISPATCH
    pickler.dump(record)
    return buffer.getvalue()


# What a record may name: the models a call becomes and the values they hold.
_ALLOWED = {
    ("klaviyo_signal._klaviyo.models", "Event"),
    ("klaviyo_signal._klaviyo.models", "Profile"),
    ("klaviyo_signal._klaviyo.models", "Location"),
    ("klaviyo_signal._klaviyo.models", "ClientProfile"),
    ("klaviyo_signal._klaviyo.models", "Identity"),
    ("klaviyo_signal._klaviyo.models", "Subscription"),
    ("klaviyo_signal._delivery.outbox", "_proxy"),
    ("datetime", "datetime"),
    ("datetime", "timezone"),
    ("datetime", "timedelta"),
    ("decimal", "Decimal"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
}


# Where an earlier release's records name a class that has moved since.
_MOVED = {
    ("klaviyo_signal._calls.identity", "Identity"): ("klaviyo_signal._klaviyo.models", "Identity"),
    ("klaviyo_signal._calls.subscription", "Subscription"): (
        "klaviyo_signal._klaviyo.models",
        "Subscription",
    ),
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        module, name = _MOVED.get((module, name), (module, name))
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"the outbox record names {module}.{name}")
        return super().find_class(module, name)


def load(data: bytes) -> Record:
    """Return a stored call.

    Raises:
        ValueError: The record is not one this version wrote.
    """
    try:
        record = _Unpickler(io.BytesIO(data)).load()
    except Exception as exc:  # a damaged or foreign record: whatever pickle raises
        raise ValueError(f"unreadable outbox record: {exc}") from None
    if not (isinstance(record, tuple) and len(record) == 5):
        raise ValueError("unreadable outbox record: not a queued call")
    return record


class _Slots:
    """This process's side lock file of one outbox and the slots it holds.

    One descriptor per file and process: closing any descriptor of a file drops every
    ``lockf`` lock the process holds on it, so two Clients on one outbox share this.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pid = os.getpid()
        self.held: set[int] = set()
        self.lock = threading.Lock()

    def fresh(self) -> None:
        """In a forked child: the parent's locks are not the child's."""
        if self.pid != os.getpid():
            self.pid = os.getpid()
            self.held = set()


_slot_files: dict[str, _Slots] = {}
_slot_files_lock = threading.Lock()
# Outboxes open in this process: a forked child must never use, or close, their
# connections (SQLite's rule), so it keeps them here, unused, for good.
_open: weakref.WeakSet[Outbox] = weakref.WeakSet()
_inherited: list[object] = []
_fork_hook = False


def _after_fork_in_child() -> None:
    for outbox in list(_open):
        if outbox._pid != os.getpid():  # not one the child opened already (a later hook's)
            outbox._abandon_in_child()


def _slots_for(lock_path: str) -> _Slots:
    with _slot_files_lock:
        slots = _slot_files.get(lock_path)
        if slots is None:
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise ConfigurationError(
                    f"outbox: cannot open the lock file {lock_path!r}: {exc.strerror}"
                ) from None
            slots = _slot_files[lock_path] = _Slots(fd)
        slots.fresh()
        return slots


def _try_lock(fd: int, slot: int) -> bool:
    try:
        import fcntl  # noqa: PLC0415 - POSIX only; the Client says so where it is missing

        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, slot, os.SEEK_SET)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise
    return True


def _unlock(fd: int, slot: int) -> None:
    import fcntl  # noqa: PLC0415

    fcntl.lockf(fd, fcntl.LOCK_UN, 1, slot, os.SEEK_SET)


class _Contended(Exception):
    """Another process held the file while it was being opened."""


def _connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(
        path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
    )
    connection.execute("PRAGMA synchronous=NORMAL")
    # Checkpoints run on the worker's own connection (see Outbox.remove), never inside a
    # caller's commit.
    connection.execute("PRAGMA wal_autocheckpoint=0")
    # Once a checkpoint has emptied it, the log is cut back to this size: a backlog (Klaviyo
    # unreachable for a while) does not leave a large log file behind.
    connection.execute(f"PRAGMA journal_size_limit={_LOG_LIMIT}")
    return connection


class Outbox:
    """One process's handle on an outbox file.

    Args:
        path: The SQLite file (created if missing, with its directory's permissions).

    Raises:
        ConfigurationError: The file cannot be created or written, is not an outbox (or
            not a database at all), or is damaged; or fcntl locks are not available.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        global _fork_hook  # noqa: PLW0603 - one hook per process, installed with the first outbox
        self.path = os.fspath(path)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._closed = False
        self._removed = 0
        self._write_failed = False
        self._checkpoint_lock = threading.Lock()
        self._checkpointer: sqlite3.Connection | None = None
        try:
            import fcntl  # noqa: F401, PLC0415
        except ImportError:
            raise ConfigurationError(
                "outbox: needs POSIX file locks (fcntl), which this platform lacks"
            ) from None
        self._connection = self._open_file()
        try:
            self._slots = _slots_for(self.path + ".lock")
            self.slot = self._take_slot()
        except BaseException:
            self._connection.close()
            raise
        _open.add(self)
        if not _fork_hook and hasattr(os, "register_at_fork"):
            _fork_hook = True
            os.register_at_fork(after_in_child=_after_fork_in_child)

    def _open_file(self) -> sqlite3.Connection:
        # Two processes opening a new file at once: SQLite answers "locked" without
        # waiting for the switch to WAL (its busy handler is not called there), so the
        # opening is tried again within the busy timeout.
        deadline = time.monotonic() + _BUSY_TIMEOUT
        while True:
            try:
                return self._open_once()
            except _Contended:
                if time.monotonic() > deadline:
                    raise ConfigurationError(
                        f"outbox {self.path!r}: still locked by another process after "
                        f"{_BUSY_TIMEOUT:g} s; check what holds it"
                    ) from None
                time.sleep(0.05)

    def _open_once(self) -> sqlite3.Connection:
        where = f"outbox {self.path!r}"
        if os.path.isdir(self.path):
            raise ConfigurationError(f"{where}: is a directory; give the path of a file")
        try:
            connection = _connect(self.path)
        except sqlite3.OperationalError as exc:
            raise ConfigurationError(f"{where}: cannot open it: {exc}") from None
        except sqlite3.Error as exc:
            raise ConfigurationError(
                f"{where}: not a usable outbox ({exc}); move it aside (it may hold calls "
                "not sent yet) or give another path"
            ) from None
        try:
            tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if not tables:
                # Small pages: each call's commit writes one page to the log.
                connection.execute("PRAGMA page_size=1024")
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ConfigurationError(f"{where}: SQLite refused WAL mode (got {mode!r})")
            check = connection.execute("PRAGMA quick_check(1)").fetchone()[0]
            if check != "ok":
                raise ConfigurationError(f"{where}: the file is damaged ({check})")
            for statement in _SCHEMA:
                connection.execute(statement)
            row = connection.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is not None and row[0] != _FORMAT:
                raise ConfigurationError(
                    f"{where}: written in outbox format {row[0]}, this version reads {_FORMAT}"
                )
            # A write, so an unwritable file fails here and not on the first call.
            connection.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('format', ?)", (_FORMAT,)
            )
        except ConfigurationError:
            connection.close()
            raise
        except sqlite3.OperationalError as exc:
            connection.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise _Contended from None
            raise ConfigurationError(
                f"{where}: not a usable outbox ({exc}); move it aside (it may hold calls "
                "not sent yet) or give another path"
            ) from None
        except sqlite3.Error as exc:
            connection.close()
            raise ConfigurationError(
                f"{where}: not a usable outbox ({exc}); move it aside (it may hold calls "
                "not sent yet) or give another path"
            ) from None
        return connection

    def _take_slot(self) -> int:
        slots = self._slots
        with slots.lock:
            for slot in range(_MAX_SLOTS):
                if slot not in slots.held and _try_lock(slots.fd, slot):
                    slots.held.add(slot)
                    return slot
        raise ConfigurationError(f"outbox {self.path!r}: every slot of its lock file is taken")

    # -- the caller's side -----------------------------------------------------------

    def add(self, record: bytes) -> int:
        """Commit one call; return its row id.

        Raises:
            sqlite3.Error: The write failed (disk full, a lock held past the busy timeout);
                logged the first time.
        """
        with self._lock:
            if self._closed:
                raise sqlite3.OperationalError("the outbox is closed")
            try:
                cursor = self._connection.execute(
                    "INSERT INTO calls (slot, rec) VALUES (?, ?)", (self.slot, record)
                )
            except sqlite3.Error as exc:
                if not self._write_failed:
                    self._write_failed = True
                    log.error(
                        "klaviyo-signal: could not write a call to outbox %r (%s); calls "
                        "that cannot be written are dropped (logged once)",
                        self.path,
                        exc,
                    )
                raise
            return cursor.lastrowid  # type: ignore[return-value]

    # -- the worker's side -------------------------------------------------------------

    def remove(self, rows: Sequence[int]) -> None:
        """Delete the rows of calls Klaviyo answered, in one transaction."""
        if not rows or self._pid != os.getpid():
            return
        try:
            # A job's rows go in slices, each its own transaction: a caller waiting to
            # commit its call waits for one slice, not for a whole job of deletes.
            for start in range(0, len(rows), _DELETE_SLICE):
                with self._lock:
                    if self._closed:
                        return
                    connection = self._connection
                    connection.execute("BEGIN")
                    try:
                        connection.executemany(
                            "DELETE FROM calls WHERE id = ?",
                            [(row,) for row in rows[start : start + _DELETE_SLICE]],
                        )
                        connection.execute("COMMIT")
                    except BaseException:
                        connection.execute("ROLLBACK")
                        raise
            self._removed += len(rows)
            if self._removed >= _CHECKPOINT_EVERY:
                self._removed = 0
                self._checkpoint()
        except sqlite3.Error:
            # The rows stay and are sent again by a later process: Klaviyo keeps one
            # event per unique_id, so this costs a repeat request, not a repeat event.
            log.exception("klaviyo-signal: could not delete sent calls from outbox %r", self.path)

    def _checkpoint(self) -> None:
        # A passive checkpoint copies the log into the file without blocking writers; on
        # its own connection, a caller's commit never waits for its disk sync.
        with self._checkpoint_lock:
            if self._closed:
                return
            if self._checkpointer is None:
                self._checkpointer = _connect(self.path)
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def adopt(self) -> list[tuple[int, bytes]]:
        """Take over the rows no live process sends; return them, oldest first.

        Those are the rows of slots whose lock no process holds (their process ended), and
        any left under this outbox's own slot by an earlier holder.
        """
        slots = self._slots
        dead: list[int] = []
        connection = self._connection
        with self._lock, slots.lock:
            connection.execute("BEGIN IMMEDIATE")  # one adopter at a time
            try:
                for (slot,) in connection.execute("SELECT DISTINCT slot FROM calls").fetchall():
                    if slot != self.slot and slot not in slots.held and _try_lock(slots.fd, slot):
                        dead.append(slot)
                if dead:
                    connection.executemany(
                        "UPDATE calls SET slot = ? WHERE slot = ?",
                        [(self.slot, slot) for slot in dead],
                    )
                rows = connection.execute(
                    "SELECT id, rec FROM calls WHERE slot = ? ORDER BY id", (self.slot,)
                ).fetchall()
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            finally:
                for slot in dead:
                    _unlock(slots.fd, slot)
        return rows

    def close(self) -> None:
        """Release the slot and the connections; the rows left stay for the next process."""
        if self._pid != os.getpid():
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._connection.close()
        with self._checkpoint_lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
        _open.discard(self)
        slots = self._slots
        with slots.lock:
            if self.slot in slots.held:
                slots.held.discard(self.slot)
                _unlock(slots.fd, self.slot)

    def _abandon_in_child(self) -> None:
        """In a forked child: the parent's connections stay open, unused, for good."""
        _inherited.append(self._connection)
        if self._checkpointer is not None:
            _inherited.append(self._checkpointer)
        self._closed = True
        _open.discard(self)

    def __repr__(self) -> str:
        return f"<Outbox {self.path!r} slot={self.slot}>"
