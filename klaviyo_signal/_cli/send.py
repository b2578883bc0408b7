"""``klaviyo-signal send``: one track call from flags, or Segment-style JSON Lines in bulk.

Background mode (the default) keeps up to ``_WINDOW`` calls in flight and reads their final
outcome with ``Delivery.wait()``, oldest first: that bounds memory and never lets the
client's queue overflow, however long the file.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
from decimal import Decimal
from typing import IO, Any, TextIO

import attrs

from .._blueprint.blueprint import Blueprint, default_blueprint
from .._blueprint.rules import CatchAll
from .._client import Client
from .._delivery.delivery import Delivery, DeliveryStatus
from .._errors import APIError, ConfigurationError, TransportError, ValidationError
from .client import client_from_env
from .lines import BadLine, lines, parse_line
from .report import Outcomes, Progress

__all__ = ["run_send"]

_WINDOW = 1000  # calls in flight in background mode
_WAIT = 120.0  # seconds to wait for one queued call before calling it failed
_SHOWN_INVALID = 10  # invalid lines reported as they happen; the rest are only counted


def _blueprint(enable: list[str] | None, event: str | None) -> Blueprint:
    blueprint = default_blueprint()
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
    """One send run: calls, their outcomes and the in-flight window."""

    def __init__(self, client: Client, err: TextIO, progress: Progress) -> None:
        self.client = client
        self.err = err
        self.progress = progress
        self.outcomes = Outcomes()
        self.pending: collections.deque[tuple[str, Delivery]] = collections.deque()

    def invalid(self, where: str, reason: str) -> None:
        """Count an input that cannot be sent; report the first few at once."""
        if self.outcomes.counts["invalid"] < _SHOWN_INVALID:
            self.progress.clear()
            self.err.write(f"{where}: invalid: {reason}\n")
        self.outcomes.add("invalid", where, reason)

    def send(self, where: str, kind: str, fields: dict[str, Any]) -> None:
        """Make one client call; its outcome is counted now (sync) or once it settles."""
        try:
            delivery: Delivery = getattr(self.client, kind)(**fields)
        except ValidationError as exc:
            self.invalid(where, str(exc))
        except (APIError, TransportError) as exc:  # sync mode raises on failure
            self.outcomes.add("failed", where, str(exc))
        else:
            self.pending.append((where, delivery))
        self.settle(drain=False)

    def settle(self, *, drain: bool) -> None:
        """Count finished calls, oldest first; wait when too many are in flight or draining."""
        while self.pending:
            where, delivery = self.pending[0]
            final = delivery.wait(0)
            if final.status is DeliveryStatus.QUEUED:
                if not drain and len(self.pending) <= _WINDOW:
                    break
                final = delivery.wait(_WAIT)
            self.pending.popleft()
            if final.status is DeliveryStatus.QUEUED:
                self.outcomes.add("failed", where, f"not sent within {_WAIT:g} s")
            else:
                self.outcomes.add(str(final.status), where, final.reason)
        self.progress.update(self.outcomes)


def run_send(
    args: argparse.Namespace, parser: argparse.ArgumentParser, out: TextIO, err: TextIO
) -> int:
    """Run ``send`` for parsed ``args``; return the exit code."""
    flags = ("user_id", "anonymous_id", "email", "properties")
    if args.file is not None and any(getattr(args, f) is not None for f in flags):
        parser.error("--user-id, --anonymous-id, --email and --properties go with --event only")
    message = _flag_message(args, parser) if args.event is not None else None
    try:
        options: dict[str, Any] = {"sync_mode": args.sync, "backfill": args.backfill}
        if args.revision is not None:
            options["revision"] = args.revision
        blueprint = _blueprint(args.enable, args.event)
        client = client_from_env("send", err, blueprint=blueprint, **options)
    except ConfigurationError as exc:
        err.write(f"klaviyo-signal send: {exc}\nSee: klaviyo-signal send --help\n")
        return 2
    # The summary reports every failure; the SDK's own warning per failed call would repeat it.
    quiet = logging.NullHandler()
    logging.getLogger("klaviyo_signal").addHandler(quiet)
    try:
        return _send(client, args, message, out, err)
    finally:
        logging.getLogger("klaviyo_signal").removeHandler(quiet)


def _send(
    client: Client,
    args: argparse.Namespace,
    message: dict[str, Any] | None,
    out: TextIO,
    err: TextIO,
) -> int:
    with client:
        if message is not None:
            run = _Run(client, err, Progress(err, 1, delay=None))
            run.send("--event", "track", message)
            run.settle(drain=True)
        else:
            try:
                stream, total = _open(args.file)
            except OSError as exc:
                err.write(f"klaviyo-signal send: cannot read {args.file}: {exc.strerror or exc}\n")
                return 2
            delay = 0.0 if args.progress else 1.0 if err.isatty() else None
            run = _Run(client, err, Progress(err, total, delay=delay))
            try:
                _send_lines(run, stream)
                run.settle(drain=True)
            except KeyboardInterrupt:
                run.progress.finish(run.outcomes)
                err.write("interrupted; the summary covers the calls finished so far\n")
                out.write(run.outcomes.summary())
                return 130
            finally:
                if args.file != "-":
                    stream.close()
            run.progress.finish(run.outcomes)
    out.write(run.outcomes.summary())
    return 0 if run.outcomes.ok else 1


def _send_lines(run: _Run, stream: IO[bytes]) -> None:
    for number, text in lines(stream):
        where = f"line {number}"
        if text is None:
            run.invalid(where, "not UTF-8 text")
            continue
        try:
            kind, fields = parse_line(text)
        except BadLine as exc:
            run.invalid(where, str(exc))
            continue
        run.send(where, kind, fields)


def _open(path: str) -> tuple[IO[bytes], int | None]:
    if path == "-":
        return sys.stdin.buffer, None
    with open(path, "rb") as counting:
        total = sum(1 for line in counting if line.strip())
    return open(path, "rb"), total  # closed by run_send
