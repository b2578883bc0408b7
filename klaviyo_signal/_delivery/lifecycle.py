"""Process lifetime: the bounded flush at exit, and a fresh start in a forked child.

One ``atexit`` hook and one ``os.register_at_fork`` hook serve every live Client; both
hold Clients only weakly, so registering never keeps a Client alive. The hooks are
installed with the first Client, not at import.

A ``multiprocessing`` child (a ``Process``, a ``Pool`` or ``ProcessPoolExecutor`` worker)
ends with ``os._exit()`` under the fork and forkserver start methods, so ``atexit`` never
runs there; ``Process._bootstrap`` runs multiprocessing's own exit finalizers instead, and
the same bounded flush is registered as one of them in each such child.

After ``fork()`` only the forking thread exists in the child: the parent's worker thread
is gone, its locks may be held forever and its pooled sockets are shared with the parent.
So each Client in the child gets a fresh queue, worker, session and counters, and the
parent's queued calls stay the parent's to send.

SIGTERM (``docker stop``, Kubernetes, systemd) ends a Python process without ``atexit``.
``install_signal_handlers`` is the opt-in: its handler only starts a flush thread, since
it runs on the main thread between two bytecodes, perhaps inside a section that holds a
worker's lock, where a flush would wait forever.

Some runtimes never let a background thread send, or freeze it: uWSGI without
``enable-threads`` never runs it; AWS Lambda freezes it between invocations; Cloud Run
throttles its CPU once the response is sent. ``starting_thread`` says so once per process,
as the first background thread starts, with what to do instead.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Protocol

from .._errors import ConfigurationError

__all__ = [
    "Managed",
    "Orphan",
    "adopt",
    "closing",
    "forget",
    "install_signal_handlers",
    "manage",
    "release",
    "starting_thread",
    "unit_flushes",
]

log = logging.getLogger("klaviyo_signal")

_Handler = Callable[[int, FrameType | None], object] | int | None


class Managed(Protocol):
    """What the hooks need from a Client."""

    def close(self) -> None:
        """Send what is queued, within the shutdown timeout, and stop."""

    def _reset_after_fork(self) -> None:
        """Drop the parent's queue, worker, session and counters (in the child)."""

    def _drain(self) -> None:
        """Send what is queued, within the shutdown timeout, and carry on."""


class Orphan(Protocol):
    """A worker whose Client was collected without close(): still owed a bounded flush."""

    def close(self, timeout: float) -> int:
        """Send what is queued for up to ``timeout`` seconds, then stop."""


class _Registry:
    def __init__(self) -> None:
        self.clients: weakref.WeakSet[Managed] = weakref.WeakSet()
        # Held strongly: nobody else references an orphan, yet its calls must still go.
        self.orphans: dict[int, tuple[Orphan, float]] = {}
        # Re-entrant: a garbage collection inside a locked section may finalize a Client,
        # whose worker then registers itself here from the same thread.
        self.lock = threading.RLock()
        self.installed = False
        # Whether multiprocessing's after-fork list holds our hook (inherited by fork).
        self.multiprocessing_hooked = False
        # The handler each signal had before ours, to chain to.
        self.previous: dict[int, _Handler] = {}
        # Flushes under way in close() or the exit hook; a signal's death waits for them.
        self.closing = 0
        self.closed = threading.Condition(threading.Lock())
        # Process-wide state each process must have of its own (the message id generator).
        self.per_process: Callable[[], None] = lambda: None
        # Whether the runtime notes were considered (once per process tree), and whether
        # the application flushes at the end of each unit of work (flush_after, flushing).
        self.noted = False
        self.unit_flushes = False


_registry = _Registry()


def manage(client: Managed, per_process: Callable[[], None]) -> None:
    """Flush ``client`` at exit and reset it in forked children, until ``forget``.

    Args:
        client: The Client.
        per_process: Renews what no two processes may share (the message id generator):
            run when the first Client is built, and in every forked child after that. The
            first run covers a process forked before any Client existed.
    """
    with _registry.lock:
        _registry.clients.add(client)
        if _registry.installed:
            return
        _registry.installed = True
        _registry.per_process = per_process
    per_process()
    atexit.register(_at_exit)
    process = sys.modules.get("multiprocessing.process")
    if process is not None and process.parent_process() is not None:
        # The first Client of a multiprocessing child (spawn, forkserver, or a fork
        # whose parent had none): the child may end with os._exit(), past atexit.
        _flush_at_multiprocessing_exit()
    if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork()
        os.register_at_fork(after_in_child=_after_fork_in_child)


def forget(client: Managed) -> None:
    """Stop managing a closed client."""
    with _registry.lock:
        _registry.clients.discard(client)


def adopt(worker: Orphan, shutdown_timeout: float) -> None:
    """Keep a collected Client's worker until it drains, and close it at exit."""
    with _registry.lock:
        _registry.orphans[id(worker)] = (worker, shutdown_timeout)


def release(worker: Orphan) -> None:
    """Forget an orphaned worker that has sent everything."""
    with _registry.lock:
        _registry.orphans.pop(id(worker), None)


@contextlib.contextmanager
def closing() -> Iterator[None]:
    """Mark a bounded flush under way: a signal's handler lets it end before the process."""
    with _registry.closed:
        _registry.closing += 1
    try:
        yield
    finally:
        with _registry.closed:
            _registry.closing -= 1
            _registry.closed.notify_all()


def _at_exit() -> None:
    with _registry.lock:
        clients = list(_registry.clients)
        orphans = list(_registry.orphans.values())
        _registry.orphans.clear()
    for client in clients:
        client.close()
    with closing():
        for worker, timeout in orphans:
            worker.close(timeout)


def _after_fork_in_child() -> None:
    # Another parent thread may have held the lock at fork time; in the child it never
    # would be released.
    _registry.lock = threading.RLock()
    _registry.closing = 0  # the parent's flushes are not this process's
    _registry.closed = threading.Condition(threading.Lock())
    _registry.per_process()
    # The parent's orphans are the parent's to send.
    _registry.orphans.clear()
    for client in list(_registry.clients):
        client._reset_after_fork()
    util = sys.modules.get("multiprocessing.util")
    if util is not None and not _registry.multiprocessing_hooked:
        # Too early to register an exit finalizer: Process._bootstrap clears them after
        # this hook. Its after-fork functions run after that, in multiprocessing children.
        _registry.multiprocessing_hooked = True
        util.register_after_fork(_registry, _in_multiprocessing_child)


def _in_multiprocessing_child(registry: _Registry) -> None:
    """Run by multiprocessing in each child it forks, once it has cleared its finalizers."""
    _flush_at_multiprocessing_exit()


def _flush_at_multiprocessing_exit() -> None:
    # Reached only once multiprocessing is loaded; a top-level import would load it (and
    # its own atexit hook) into every process.
    from multiprocessing import util  # noqa: PLC0415

    # Ahead of multiprocessing's own finalizers (queues close at 10, pools at 15), so an
    # on_delivery callback may still use them.
    util.Finalize(None, _at_exit, exitpriority=20)


def install_signal_handlers(signals: Iterable[int]) -> None:
    """Flush every Client when one of ``signals`` arrives, then let it take its course.

    Raises:
        ConfigurationError: Not on the main thread, or a signal that cannot be caught.
    """
    if threading.current_thread() is not threading.main_thread():
        raise ConfigurationError(
            "install_signal_handlers() must be called from the main thread (Python runs "
            "signal handlers there only)"
        )
    for signum in signals:
        try:
            current = signal.getsignal(signum)
            if current is _on_signal:
                continue  # installed already: chaining to ourselves would loop
            signal.signal(signum, _on_signal)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigurationError(f"cannot handle signal {signum!r}: {exc}") from None
        _registry.previous[signum] = current


def _on_signal(signum: int, frame: FrameType | None) -> None:
    previous = _registry.previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        # The application handles it (a graceful shutdown, say) and may go on: flush,
        # but keep the clients open; the exit hook closes them when the process ends.
        _in_background(_drain_all)
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        _in_background(_drain_all)
    else:
        # The default: the process ends by this signal, as it would have, once the queue
        # is sent. A second one ends it at once.
        signal.signal(signum, signal.SIG_DFL)
        _in_background(_close_all_then_die, signum)


def _in_background(target: Callable[..., None], *args: object) -> None:
    # Not a daemon: an interpreter exit on the main thread meanwhile waits for it.
    thread = threading.Thread(target=target, args=args, name="klaviyo-signal-shutdown")
    # RuntimeError: the interpreter is exiting, and its exit hook flushes.
    with contextlib.suppress(RuntimeError):
        thread.start()


def _drain_all() -> None:
    with _registry.lock:
        clients = list(_registry.clients)
    for client in clients:
        client._drain()


def _close_all_then_die(signum: int) -> None:
    try:
        _at_exit()
        # A close() or exit hook the signal interrupted (on the main thread, say, with
        # the clients already taken off the list) is still sending: let it finish.
        with _registry.closed:
            _registry.closed.wait_for(lambda: _registry.closing == 0)
    finally:
        os.kill(os.getpid(), signum)


def unit_flushes() -> None:
    """Record that the application flushes after each unit of work (no Lambda note)."""
    _registry.unit_flushes = True


# What the first background thread's start says, per runtime: (environment variable, note).
_SERVERLESS = (
    (
        "AWS_LAMBDA_FUNCTION_NAME",
        "klaviyo-signal: running on AWS Lambda, which freezes background threads between "
        "invocations: queued calls wait for the next invocation, and are lost when the "
        "environment is recycled. Decorate the handler with @client.flush_after(timeout=2.0) "
        "(or wrap its body in `with client.flushing(timeout=2.0):`), or use sync_mode=True; "
        "see docs/serverless.md",
    ),
    (
        "K_SERVICE",
        "klaviyo-signal: running on Cloud Run, which throttles the CPU once a response is "
        "sent (unless CPU is always allocated): queued calls may wait until the next request. "
        "Decorate request handlers with @client.flush_after(timeout=2.0) (or use `with "
        "client.flushing(timeout=2.0):`) and call client.install_signal_handlers() for the "
        "SIGTERM before shutdown; see docs/serverless.md",
    ),
)


def starting_thread() -> None:
    """Log, once per process, what keeps this runtime from sending in the background.

    Called on the caller's thread as a worker starts its first thread: under uWSGI without
    threads that thread would never run, so nothing can be said from it.
    """
    if _registry.noted:
        return
    _registry.noted = True
    if _uwsgi_without_threads():
        log.error(
            "klaviyo-signal: uWSGI runs without enable-threads, so the delivery thread never "
            "runs and queued calls are never sent. Start uWSGI with --enable-threads (or "
            "`enable-threads = true` in its ini file), or build the Client with "
            "sync_mode=True; see docs/gevent.md"
        )
    if not _registry.unit_flushes:
        for variable, note in _SERVERLESS:
            if os.environ.get(variable):
                log.warning(note)
                break


def _uwsgi_without_threads() -> bool:
    """Whether this process is a uWSGI worker whose Python threads never run."""
    if "uwsgi" not in sys.modules:
        try:
            # Only a uWSGI process has it (an embedded module); importing it is the test.
            importlib.import_module("uwsgi")
        except ImportError:
            return False
    options = getattr(sys.modules["uwsgi"], "opt", None)
    if not isinstance(options, dict):
        return False
    # --threads implies enable-threads; values are bytes (b"true", b"4") or True.
    return not any(_on(options.get(name)) for name in ("enable-threads", "threads"))


def _on(value: object) -> bool:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)
