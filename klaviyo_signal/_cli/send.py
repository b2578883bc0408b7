"""``klaviyo-signal send``: one track call from flags, or Segment-style JSON Lines in bulk.

The file is streamed: a line is read, handed to the client and forgotten; its outcome
comes back through the client's ``on_delivery``. Background mode (the default) keeps at
most ``_WINDOW`` calls in the client's queue (``block_on_full``), so memory stays flat
however long the file, and the worker sends events in bulk jobs and identifies and
subscriptions through their own endpoints, each paced to Klaviyo's limits.

Reruns are duplicate-free: a line without a ``messageId`` gets one derived from the
file's content and its line number (``InputFile.message_id``), the same in every run, and
Klaviyo records an event once per ``unique_id``. With ``--resume`` a state file
(``checkpoint.py``) remembers which lines are final, so a rerun after a crash, a kill or
Ctrl-C sends only the others.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from decimal import Decimal
from types import FrameType
from typing import IO, Any, TextIO

import attrs

from .._blueprint.blueprint import Blueprint, default_blueprint
from .._blueprint.rules import CatchAll
from .._calls.message import new_message_id
from .._client import Client
from .._delivery.delivery import Delivery, DeliveryStatus
from .._errors import APIError, ConfigurationError, TransportError, ValidationError
from .checkpoint import Checkpoint, Finished, StateError
from .client import client_from_env
from .lines import BadLine, InputFile, lines, parse_line, scan
from .report import FailedReport, Outcomes, Progress

__all__ = ["run_send"]

# Calls in the client's queue at most (background mode): a full bulk profile import job's
# worth and more, so the reader never starves the worker, and a bounded memory.
_WINDOW = 20_000
_TICK = 0.1  # seconds between progress redraws
_SAVE_EVERY = 1.0  # seconds between checkpoints
_SHOWN_INVALID = 10  # invalid lines reported as they happen; the rest are only counted
_EXIT_ON = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _blueprint(path: str | None, enable: list[str] | None, event: str | None) -> Blueprint:
    blueprint = Blueprint.from_file(path) if path else default_blueprint()
    for name in enable or ():
        if name != "*":
            blueprint = blueprint.enable(name)
        elif event is not None:
            blueprint = blueprint.enable(event)
        else:
            blueprint = attrs.evolve(blueprint, catch_all=CatchAll("forward"))
    return blueprint


def _flag_message(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    fields: dict[str, Any] = {"event": args.event}
    if args.user_id is not None:
        fields["user_id"] = args.user_id
    if args.anonymous_id is not None:
        fields["anonymous_id"] = args.anonymous_id
    if args.email is not None:
        fields["traits"] = {"email": args.email}
    if args.properties is not None:
        try:
            fields["properties"] = json.loads(args.properties, parse_float=Decimal)
        except ValueError as exc:
            parser.error(f"--properties: not JSON: {exc}")
        if not isinstance(fields["properties"], dict):
            parser.error("--properties: must be a JSON object, e.g. '{\"revenue\": 9.5}'")
    return fields


class _Run:
    """One send run: the calls in flight, their outcomes, the checkpoint and the report.

    Outcomes arrive on the worker thread (``on_delivery``) or, for calls that end at once,
    on the caller's; one lock guards everything both touch.
    """

    def __init__(
        self,
        err: TextIO,
        progress: Progress,
        outcomes: Outcomes,
        *,
        source: InputFile | None = None,
        checkpoint: Checkpoint | None = None,
        report: FailedReport | None = None,
    ) -> None:
        self.err = err
        self.progress = progress
        self.outcomes = outcomes
        self.source = source
        self.checkpoint = checkpoint
        self.finished = checkpoint.finished if checkpoint is not None else Finished()
        self.report = report
        self.lock = threading.Lock()
        self.in_flight: dict[str, tuple[int, str]] = {}  # message id -> (line, its text)
        self.closing = False
        self.stop_signal: int | None = None
        self._ticking = threading.Event()
        self._ticker: threading.Thread | None = None

    # -- outcomes ------------------------------------------------------------------------

    def on_delivery(self, delivery: Delivery) -> None:
        """The client's on_delivery: count the final outcome of one line's call."""
        with self.lock:
            entry = self.in_flight.pop(delivery.message_id, None)
            if entry is None:
                return
            # After an interrupt the client ends what it could not send as dropped or failed
            # "shutdown": such a line is not final; a resumed run sends it again.
            if self.closing and not (
                delivery.status is DeliveryStatus.DELIVERED
                or (delivery.status is DeliveryStatus.FAILED and delivery.http_status is not None)
            ):
                return
            self._final(*entry, str(delivery.status), delivery.reason, delivery.message_id)

    def _final(
        self, line: int, text: str, kind: str, reason: str | None, message_id: str | None
    ) -> None:
        # The report gets a failed line before the checkpoint may count it as final.
        if self.report is not None and kind in ("failed", "invalid"):
            self.report.add(line, text, kind, reason, message_id)
        self.outcomes.add(kind, reason, line or None)  # line 0: the --event call
        self.finished.add(line)

    def invalid(self, line: int, text: str, reason: str, message_id: str | None = None) -> None:
        """Count an input that cannot be sent; report the first few at once."""
        with self.lock:
            self._invalid(line, text, reason, message_id)

    def _invalid(self, line: int, text: str, reason: str, message_id: str | None) -> None:
        if self.outcomes.counts["invalid"] < _SHOWN_INVALID:
            self.progress.clear()
            self.err.write(f"{'--event' if line == 0 else f'line {line}'}: invalid: {reason}\n")
        self._final(line, text, "invalid", reason, message_id)

    # -- calls ---------------------------------------------------------------------------

    def send(self, client: Client, line: int, text: str, kind: str, fields: dict[str, Any]) -> None:
        """Make one client call; its outcome is counted when it arrives."""
        message_id = fields.get("message_id")
        if message_id is None:
            # Chosen here, so the outcome can be matched to its line.
            message_id = self.source.message_id(line) if self.source else new_message_id()
            fields["message_id"] = message_id
        key = message_id if isinstance(message_id, str) else None  # else the client refuses it
        with self.lock:
            if key is not None and key in self.in_flight:
                first = self.in_flight[key][0]
                reason = (
                    f"duplicate: messageId {key!r} repeats line {first}, still in flight "
                    "(Klaviyo records one event per id)"
                )
                self._final(line, text, "dropped", reason, None)
                return
            if key is not None:
                self.in_flight[key] = (line, text)
        try:
            getattr(client, kind)(**fields)
        except ValidationError as exc:
            self._unsent(key, line, text, "invalid", str(exc))
        except (APIError, TransportError) as exc:  # sync mode raises on failure
            self._unsent(key, line, text, "failed", str(exc))

    def _unsent(self, key: str | None, line: int, text: str, kind: str, reason: str) -> None:
        with self.lock:
            # A failure was already counted by on_delivery; a refusal never reached it.
            if key is not None and self.in_flight.pop(key, None) is None:
                return
            if kind == "invalid":
                self._invalid(line, text, reason, key)
            else:
                self._final(line, text, kind, reason, key)

    # -- progress and checkpoints --------------------------------------------------------

    def start_ticking(self) -> None:
        """Redraw progress and save checkpoints from a thread of their own, so neither
        waits while the reader is blocked on a full queue."""
        self._ticker = threading.Thread(target=self._tick, name="klaviyo-signal-send", daemon=True)
        self._ticker.start()

    def stop_ticking(self) -> None:
        """Stop the ticker thread and save a last checkpoint."""
        self._ticking.set()
        if self._ticker is not None:
            self._ticker.join()
        self.save()

    def _tick(self) -> None:
        saved = time.monotonic()
        while not self._ticking.wait(_TICK):
            with self.lock:
                self.progress.update(self.outcomes)
            if time.monotonic() - saved >= _SAVE_EVERY:
                saved = time.monotonic()
                self.save()

    def save(self) -> None:
        """Write the checkpoint: the report's records first, then the lines they cover."""
        if self.checkpoint is None and self.report is None:
            return
        with self.lock:
            synced = self.report.flush() if self.report is not None else False
            snapshot = (
                self.checkpoint.snapshot(self.outcomes.total())
                if self.checkpoint is not None
                else None
            )
        if synced and self.report is not None:
            self.report.fsync()
        if snapshot is not None and self.checkpoint is not None:
            self.checkpoint.write(snapshot)

    # -- signals -------------------------------------------------------------------------

    @contextmanager
    def signals(self) -> Iterator[None]:
        """While reading: a first SIGINT or SIGTERM stops the run after the current line;
        a second one stops it at once (KeyboardInterrupt)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop(signum: int, frame: FrameType | None) -> None:
            if self.stop_signal is not None:
                raise KeyboardInterrupt
            self.stop_signal = signum

        before = {signum: signal.signal(signum, stop) for signum in _EXIT_ON}
        try:
            yield
        finally:
            for signum, handler in before.items():
                signal.signal(signum, handler)


def run_send(
    args: argparse.Namespace, parser: argparse.ArgumentParser, out: TextIO, err: TextIO
) -> int:
    """Run ``send`` for parsed ``args``; return the exit code."""
    flags = ("user_id", "anonymous_id", "email", "properties")
    if args.file is not None and any(getattr(args, f) is not None for f in flags):
        parser.error("--user-id, --anonymous-id, --email and --properties go with --event only")
    if args.file is None and (args.resume is not None or args.failed is not None):
        parser.error("--resume and --failed go with --file only")
    if args.file == "-" and args.resume is not None:
        parser.error("--resume needs a file: stdin cannot be fingerprinted or read again")
    message = _flag_message(args, parser) if args.event is not None else None
    try:
        blueprint = _blueprint(args.blueprint, args.enable, args.event)
    except (ConfigurationError, ValidationError, OSError) as exc:  # BlueprintError included
        err.write(f"klaviyo-signal send: --blueprint: {exc}\n")
        return 2
    run = _prepare(args, message is not None, err)
    if isinstance(run, int):
        return run
    try:
        options: dict[str, Any] = {
            "sync_mode": args.sync,
            "backfill": args.backfill,
            "on_delivery": run.on_delivery,
            "block_on_full": True,
            "max_queue_size": _WINDOW,
        }
        if args.revision is not None:
            options["revision"] = args.revision
        client = client_from_env("send", err, blueprint=blueprint, **options)
    except ConfigurationError as exc:
        err.write(f"klaviyo-signal send: {exc}\nSee: klaviyo-signal send --help\n")
        if run.report is not None:
            run.report.close()
        return 2
    # The summary reports every failure; the SDK's own warning per failed call would repeat it.
    quiet = logging.NullHandler()
    logging.getLogger("klaviyo_signal").addHandler(quiet)
    try:
        if message is not None:
            return _send_one(client, run, message, out)
        return _send_file(client, run, args.file, out)
    finally:
        logging.getLogger("klaviyo_signal").removeHandler(quiet)
        if run.report is not None:
            run.report.close()


def _prepare(args: argparse.Namespace, one: bool, err: TextIO) -> _Run | int:
    """Read the input's fingerprint, the state and the report file; an exit code if one fails."""
    source: InputFile | None = None
    checkpoint: Checkpoint | None = None
    if args.file is not None and args.file != "-":
        try:
            source = scan(args.file)
            if args.resume is not None:
                checkpoint = Checkpoint(args.resume, source)
        except StateError as exc:
            err.write(f"klaviyo-signal send: --resume: {exc}\n")
            return 2
        except OSError as exc:
            name = exc.filename or args.file
            err.write(f"klaviyo-signal send: cannot read {name}: {exc.strerror or exc}\n")
            return 2
    report: FailedReport | None = None
    if args.failed is not None:
        try:
            report = FailedReport(args.failed, append=checkpoint is not None and checkpoint.resumed)
        except OSError as exc:
            err.write(f"klaviyo-signal send: cannot write {args.failed}: {exc.strerror or exc}\n")
            return 2
    if one:
        progress = Progress(err, 1, delay=None)
    else:
        total = source.messages if source is not None else None
        bar = args.progress or err.isatty()
        progress = Progress(err, total, bar=bar, delay=0.0 if args.progress else 1.0)
    outcomes = Outcomes(checkpoint.counts if checkpoint is not None else None)
    return _Run(err, progress, outcomes, source=source, checkpoint=checkpoint, report=report)


def _send_one(client: Client, run: _Run, message: dict[str, Any], out: TextIO) -> int:
    with client:
        run.send(client, 0, json.dumps({"type": "track", **message}, default=str), "track", message)
        client.flush()
    out.write(run.outcomes.summary())
    return 0 if run.outcomes.ok else 1


def _send_file(client: Client, run: _Run, path: str, out: TextIO) -> int:
    try:
        stream: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        run.err.write(f"klaviyo-signal send: cannot read {path}: {exc.strerror or exc}\n")
        return 2
    interrupted: int | None = None
    run.start_ticking()
    try:
        with run.signals():
            try:
                _read(client, run, stream)
                # Wait for every call's outcome; flush(None) would not see a signal.
                while run.stop_signal is None and not client.flush(0.5):
                    pass
            except KeyboardInterrupt:
                run.stop_signal = run.stop_signal or signal.SIGINT
            interrupted = run.stop_signal
            if interrupted is not None:
                with run.lock:
                    run.progress.clear()
                    run.err.write(
                        "interrupted: sending what is in flight for a few seconds (again to "
                        "stop at once); the summary covers the calls finished so far\n"
                    )
                    run.closing = True
            with suppress(KeyboardInterrupt):  # a second signal: stop waiting for the worker
                client.close()
    finally:
        if path != "-":
            stream.close()
        run.stop_ticking()
    run.progress.finish(run.outcomes)
    out.write(run.outcomes.summary())
    if interrupted is not None:
        if run.checkpoint is not None:
            run.err.write(f"resume with: --resume {run.checkpoint.path}\n")
        return _EXIT_ON.get(signal.Signals(interrupted), 130)
    return 0 if run.outcomes.ok else 1


def _read(client: Client, run: _Run, stream: IO[bytes]) -> None:
    finished = run.finished
    skip: Callable[[int], bool] = finished.skipper() if run.checkpoint is not None else _never
    after = 0  # the last line read: the blank lines between it and the next are final too
    for number, text, raw in lines(stream):
        if run.stop_signal is not None:
            return
        if number > after + 1 and not skip(after + 1):
            with run.lock:
                finished.add(after + 1, number)
        after = number
        if skip(number):
            run.outcomes.skipped += 1
            continue
        if text is None:
            run.invalid(number, raw.decode("utf-8", "replace"), "not UTF-8 text")
            continue
        try:
            kind, fields = parse_line(text)
        except BadLine as exc:
            run.invalid(number, text, str(exc))
            continue
        run.send(client, number, text, kind, fields)


def _never(number: int) -> bool:
    return False
