"""What ``klaviyo-signal send`` tells the operator: outcomes by reason, progress, failed lines."""

from __future__ import annotations

import collections
import os
import textwrap
import time
from collections.abc import Callable, Mapping
from typing import TextIO

from .._klaviyo.json import JSON, dumps
from .lines import BadLine, read_object

__all__ = ["FailedReport", "Outcomes", "Progress"]

_WIDTH = 80
_KINDS = ("delivered", "dropped", "failed", "invalid")
_SHOWN = 5  # reasons shown per outcome in the summary, the most frequent first
_KEPT = 100  # distinct reasons counted per outcome; the rest count as other reasons
_LINES = 3  # line numbers shown per reason
_OTHER = "other reasons"
_RATE_SPAN = 10.0  # seconds of history the rate (and so the ETA) is measured over
_PLAIN_EVERY = 10.0  # seconds between progress lines when stderr is not a terminal


class Outcomes:
    """Counts of delivered, dropped, failed and invalid calls, and of each one's reasons.

    Args:
        earlier: The counts of earlier runs over the same input (``--resume``).
    """

    def __init__(self, earlier: Mapping[str, int] | None = None) -> None:
        self.counts = dict.fromkeys(_KINDS, 0)
        self.earlier = {kind: int((earlier or {}).get(kind, 0)) for kind in _KINDS}
        self.skipped = 0  # lines finished by an earlier run, not sent again
        # Per outcome: reason -> [count, its first line numbers].
        self._reasons: dict[str, dict[str, list[int]]] = {kind: {} for kind in _KINDS}

    def add(self, kind: str, reason: str | None = None, line: int | None = None) -> None:
        """Count one outcome; ``line`` is its input line, if it came from a file."""
        self.counts[kind] += 1
        if reason is None:
            return
        reasons = self._reasons[kind]
        entry = reasons.get(reason)
        if entry is None:
            if len(reasons) >= _KEPT:
                reason = _OTHER
                entry = reasons.get(reason)
            if entry is None:
                entry = reasons[reason] = [0]
        entry[0] += 1
        if line is not None and len(entry) <= _LINES:
            entry.append(line)

    @property
    def done(self) -> int:
        """How many calls have a final outcome in this run."""
        return sum(self.counts.values())

    @property
    def ok(self) -> bool:
        """Whether nothing failed and nothing was invalid (drops are the blueprint's choice)."""
        return not (self.counts["failed"] or self.counts["invalid"])

    def total(self) -> dict[str, int]:
        """The counts of this run and the earlier ones together."""
        return {kind: self.counts[kind] + self.earlier[kind] for kind in _KINDS}

    def tally(self, counts: Mapping[str, int] | None = None) -> str:
        """One line: ``3 delivered, 1 dropped, 0 failed, 0 invalid``."""
        counts = self.counts if counts is None else counts
        return ", ".join(f"{counts[kind]} {kind}" for kind in _KINDS)

    def brief(self) -> str:
        """The outcomes other than delivered that occurred, for the progress line."""
        return " ".join(f"{self.counts[k]} {k}" for k in _KINDS[1:] if self.counts[k])

    def summary(self) -> str:
        """The tally, then each outcome's most frequent reasons with a count and lines."""
        lines = [f"{self.done} call(s): {self.tally()}"]
        if self.skipped:
            lines.append(
                f"{self.skipped} line(s) finished in an earlier run were skipped; all runs: "
                f"{self.tally(self.total())}"
            )
        for kind in _KINDS[1:]:
            ranked = sorted(self._reasons[kind].items(), key=lambda item: -item[1][0])
            for index, (reason, entry) in enumerate(ranked[:_SHOWN]):
                count, numbers = entry[0], entry[1:]
                where = ""
                if numbers:
                    more = ", ..." if count > len(numbers) else ""
                    label = "line" if count == 1 else "lines"
                    where = f" ({label} {', '.join(map(str, numbers))}{more})"
                lines.append(
                    textwrap.fill(
                        f"{count} x {reason}{where}",
                        _WIDTH,
                        initial_indent=f"{kind:<9}" if index == 0 else " " * 9,
                        subsequent_indent=" " * 11,
                    )
                )
            rest = sum(entry[0] for _, entry in ranked[_SHOWN:])
            if rest:
                lines.append(f"{'':<9}... and {rest} more {kind} for other reasons")
        return "\n".join(lines) + "\n"


class Progress:
    """Progress on stderr: a bar redrawn in place on a terminal, else a line every 10 s.

    Both show the share done, the rate over the last seconds and the time left.

    Args:
        stream: Where to write (stderr).
        total: How many lines to expect, if known.
        bar: Draw a bar (a terminal, or ``--progress``); False writes plain lines.
        delay: Seconds the run must last before anything appears (so short runs stay
            quiet); None never shows progress.
        clock: Monotonic seconds (tests pass another).
    """

    def __init__(
        self,
        stream: TextIO,
        total: int | None,
        *,
        bar: bool = True,
        delay: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._total = total
        self._bar = bar
        self._clock = clock
        self._start = clock()
        self._delay = delay
        self._last = 0.0
        self._shown = False
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def update(self, outcomes: Outcomes, *, force: bool = False) -> None:
        """Redraw when enough time has passed (or ``force``)."""
        now = self._clock()
        done = outcomes.done + outcomes.skipped
        self._samples.append((now, outcomes.done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= _RATE_SPAN:
            self._samples.popleft()
        if self._delay is None or now - self._start < self._delay:
            return
        every = 0.1 if self._bar else _PLAIN_EVERY
        if not force and now - self._last < every:
            return
        if not self._bar and not self._shown and now - self._start < _PLAIN_EVERY:
            return
        self._last = now
        self._shown = True
        rate = self._rate(now, outcomes.done)
        pace = f"{rate:,.0f}/s" if rate is not None else ""
        eta = ""
        if self._total and rate:
            eta = f"ETA {_duration(max(self._total - done, 0) / rate)}"
        if self._bar:
            if self._total:
                share = min(done / self._total, 1.0)
                filled = int(share * 20)
                head = f"[{'#' * filled}{'-' * (20 - filled)}] {share:4.0%} {done}/{self._total}"
            else:
                head = f"{done} sent"
            line = "  ".join(p for p in (head, pace, eta, outcomes.brief()) if p)[: _WIDTH - 1]
            self._stream.write(f"\r{line:<{_WIDTH - 1}}")
        else:
            part = f" ({done / self._total:.0%})" if self._total else ""
            of = f"/{self._total}" if self._total else ""
            parts = [f"progress: {done}{of} lines{part}", pace, eta]
            self._stream.write(", ".join(p for p in parts if p) + f"; {outcomes.tally()}\n")
        self._stream.flush()

    def _rate(self, now: float, done: int) -> float | None:
        first_time, first_done = self._samples[0]
        if now - first_time < 0.5:
            return None
        return (done - first_done) / (now - first_time)

    def clear(self) -> None:
        """Blank the bar so another line can be written."""
        if self._shown and self._bar:
            self._stream.write("\r" + " " * (_WIDTH - 1) + "\r")

    def finish(self, outcomes: Outcomes) -> None:
        """Show the final state once the run lasted the delay (a bar: and end its line)."""
        if self._delay is None or self._clock() - self._start < self._delay:
            return
        if self._bar:
            self.update(outcomes, force=True)
            self._stream.write("\n")
            self._stream.flush()
        elif self._shown:
            self.update(outcomes, force=True)


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class FailedReport:
    """``send --failed FILE``: one JSON line per failed or invalid input line.

    Each record is the line's own message with a ``_failed`` key first (the line number,
    the outcome and the reason), and the ``messageId`` the call was sent with when the line
    had none, so the report can be sent again as input (``_failed`` is ignored there) and
    Klaviyo still recognises repeated events. A line that is not a JSON object is kept as
    ``_failed.text``.

    Args:
        path: The report file.
        append: Add to it (a resumed run) instead of starting it afresh.

    Raises:
        OSError: It cannot be opened for writing.
    """

    def __init__(self, path: str, *, append: bool) -> None:
        self.path = path
        self._stream = open(path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115
        self._dirty = False
        self.written = 0

    def add(
        self, line: int, text: str, outcome: str, reason: str | None, message_id: str | None
    ) -> None:
        """Write one record for input ``line`` (its text) and its outcome."""
        failure: dict[str, JSON] = {"line": line, "outcome": outcome, "reason": reason}
        try:
            message = read_object(text)
            earlier = message.pop("_failed", None)  # a report sent again: one failure only
            if not message and isinstance(earlier, dict) and "text" in earlier:
                # A line that was no message still is: keep what was wrong with it.
                failure["reason"] = earlier.get("reason")
                failure["text"] = earlier["text"]
            elif message_id is not None and not {"messageId", "message_id"} & message.keys():
                message["messageId"] = message_id
            record = dumps({"_failed": failure, **message})
        except (BadLine, ValueError, TypeError):
            failure["text"] = text.rstrip("\r\n")
            record = dumps({"_failed": failure})
        self._stream.write(record.decode("utf-8") + "\n")
        self._dirty = True
        self.written += 1

    def flush(self) -> bool:
        """Hand the records written so far to the OS; True if there were new ones."""
        dirty, self._dirty = self._dirty, False
        if dirty:
            self._stream.flush()
        return dirty

    def fsync(self) -> None:
        """Make the flushed records durable (before a checkpoint counts their lines)."""
        os.fsync(self._stream.fileno())

    def close(self) -> None:
        """Flush, sync and close the file."""
        if self.flush():
            self.fsync()
        self._stream.close()
