"""``klaviyo-signal send``: one track call from flags, or Segment-style JSON Lines in bulk.

Background mode (the default) keeps up to ``_WINDOW`` calls in flight and reads their final
outcome with ``Delivery.wait()``, oldest first: that bounds memory and never lets the
client's queue overflow, however long the file.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import IO, Any, TextIO

from ._blueprint import Blueprint, Rule, default_blueprint, metric_name
from ._client import Client
from ._cli_report import Outcomes, Progress
from ._delivery import Delivery, DeliveryStatus
from ._errors import APIError, ConfigurationError, TransportError, ValidationError

__all__ = ["parse_line", "run_send"]

_WINDOW = 1000  # calls in flight in background mode
_WAIT = 120.0  # seconds to wait for one queued call before calling it failed
_SHOWN_INVALID = 10  # invalid lines reported as they happen; the rest are only counted
_ALIASES = {
    "userId": "user_id",
    "anonymousId": "anonymous_id",
    "messageId": "message_id",
}
_COMMON = {"user_id", "anonymous_id", "traits", "context", "timestamp", "message_id"}
_FIELDS = {
    "track": _COMMON | {"event", "properties"},
    "page": _COMMON | {"name", "properties"},
    "identify": _COMMON,
}
_KNOWN = {field for fields in _FIELDS.values() for field in fields}


class BadLine(ValueError):
    """A line is not a message this command can send."""


class _ForwardEvery(Mapping[str, Rule]):
    """Blueprint rules that forward any event without a rule of its own (bare ``--enable``)."""

    def __init__(self, rules: Mapping[str, Rule]) -> None:
        self._rules = dict(rules)

    def __getitem__(self, name: str) -> Rule:
        return self._rules.get(name) or Rule(metric=metric_name(name), forward_all=True)

    def __iter__(self) -> Iterator[str]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)


def _blueprint(enable: list[str] | None, event: str | None) -> Blueprint:
    blueprint = default_blueprint()
    for name in enable or ():
        if name == "*" and event is None:
            blueprint = Blueprint(rules=_ForwardEvery(blueprint.rules), page=blueprint.page)
        else:
            blueprint = blueprint.enable(event if name == "*" else name)
    return blueprint


def parse_line(text: str) -> tuple[str, dict[str, Any]]:
    """Read one Segment-style message: return the call name and its keyword arguments.

    Keys may be camelCase (``userId``) or snake_case (``user_id``); keys the call does not
    use, such as Segment's ``sentAt`` or ``integrations``, are ignored.

    Raises:
        BadLine: Not JSON, not an object, an unknown ``type``, or a key the type cannot take.
    """
    try:
        message = json.loads(text, parse_float=Decimal)  # money stays exact
    except ValueError as exc:
        raise BadLine(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise BadLine(f"expected a JSON object, got {type(message).__name__}")
    kind = message.get("type")
    if kind not in _FIELDS:
        raise BadLine(f"'type' must be 'track', 'identify' or 'page', got {kind!r}")
    fields: dict[str, Any] = {}
    for key, value in message.items():
        name = _ALIASES.get(key, key)
        if name not in _KNOWN or value is None:
            continue
        if name not in _FIELDS[kind]:
            raise BadLine(f"{kind} messages take no {key!r}")
        if name in fields:
            raise BadLine(f"{key!r} repeats another spelling of the same key")
        fields[name] = value
    return kind, fields


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


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, str | None]]:
    """Yield (line number, text) for each non-blank line; text None when it is not UTF-8."""
    for number, raw in enumerate(stream, 1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            yield number, None
            continue
        if text.strip():
            yield number, text


class _Run:
    """One send run: calls, outcomes and the in-flight window."""

    def __init__(self, client: Client, sync: bool, err: TextIO, progress: Progress) -> None:
        self.client = client
        self.sync = sync
        self.err = err
        self.progress = progress
        self.outcomes = Outcomes()
        self.pending: collections.deque[tuple[str, Delivery]] = collections.deque()

    def invalid(self, where: str, reason: str) -> None:
        if self.outcomes.counts["invalid"] < _SHOWN_INVALID:
            self.progress.clear()
            self.err.write(f"{where}: invalid: {reason}\n")
        self.outcomes.add("invalid", where, reason)

    def send(self, where: str, kind: str, fields: dict[str, Any]) -> None:
        try:
            delivery: Delivery = getattr(self.client, kind)(**fields)
        except (ValidationError, TypeError) as exc:
            self.invalid(where, str(exc))
        except (APIError, TransportError) as exc:  # sync mode
            self.outcomes.add("failed", where, str(exc))
        else:
            self.pending.append((where, delivery))
        self.settle(drain=False)

    def settle(self, *, drain: bool) -> None:
        """Record finished calls, oldest first; wait when too many are in flight or draining."""
        while self.pending:
            where, delivery = self.pending[0]
            final = delivery.wait(0)
            if final.status is DeliveryStatus.QUEUED:
                if not drain and len(self.pending) <= _WINDOW:
                    break
                final = delivery.wait(_WAIT)
            self.pending.popleft()
            status = final.status
            if status is DeliveryStatus.QUEUED:
                status, final = DeliveryStatus.FAILED, Delivery(
                    final.message_id, status, f"not sent within {_WAIT:g} s"
                )
            self.outcomes.add(str(status), where, final.reason)
            self.progress.update(self.outcomes)
        self.progress.update(self.outcomes)


def run_send(
    args: argparse.Namespace, parser: argparse.ArgumentParser, out: TextIO, err: TextIO
) -> int:
    """Run ``send`` for parsed ``args``; return the exit code."""
    flags = ("user_id", "anonymous_id", "email", "properties")
    if args.file is not None and any(getattr(args, f) is not None for f in flags):
        parser.error("--user-id, --anonymous-id, --email and --properties go with --event only")
    message = _flag_message(args, parser) if args.event is not None else None
    stream, total = None, None
    if args.file is not None:
        try:
            stream, total = _open(args.file)
        except OSError as exc:
            err.write(f"klaviyo-signal send: cannot read {args.file}: {exc.strerror or exc}\n")
            return 2
    try:
        client = Client.from_env(
            sync_mode=args.sync, blueprint=_blueprint(args.enable, args.event)
        )
    except ConfigurationError as exc:
        err.write(f"klaviyo-signal send: {exc}\nSee: klaviyo-signal send --help\n")
        return 2
    progress = Progress(err, total, always=args.progress) if (
        args.progress or err.isatty()
    ) else Progress(_Null(), None, always=False)
    run = _Run(client, args.sync, err, progress)
    try:
        with client:
            if message is not None:
                run.send("--event", "track", message)
            else:
                assert stream is not None
                _send_lines(run, stream)
            run.settle(drain=True)
    except KeyboardInterrupt:
        progress.finish(run.outcomes)
        err.write("interrupted; calls already queued were sent if they could be\n")
        out.write(run.outcomes.summary())
        return 130
    finally:
        if stream is not None and stream is not sys.stdin.buffer:
            stream.close()
    progress.finish(run.outcomes)
    out.write(run.outcomes.summary())
    return 0 if run.outcomes.ok else 1


def _send_lines(run: _Run, stream: IO[bytes]) -> None:
    for number, text in _lines(stream):
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
    return open(path, "rb"), total  # noqa: SIM115 - closed by run_send


class _Null:
    """A stream that discards what is written (the progress bar when it is off)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
