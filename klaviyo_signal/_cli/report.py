"""What ``klaviyo-signal send`` tells the operator: a tally of outcomes and a progress bar."""

from __future__ import annotations

import textwrap
import time
from typing import TextIO

__all__ = ["Outcomes", "Progress"]

_WIDTH = 80
_KINDS = ("delivered", "dropped", "failed", "invalid")
_FIRST = 3  # reasons kept per outcome for the summary


class Outcomes:
    """Counts of delivered, dropped, failed and invalid calls, with the first reasons of each."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(_KINDS, 0)
        self._reasons: dict[str, list[str]] = {kind: [] for kind in _KINDS}

    def add(self, kind: str, where: str, reason: str | None = None) -> None:
        """Count one outcome; ``where`` names its source (``line 12``)."""
        self.counts[kind] += 1
        if reason and len(self._reasons[kind]) < _FIRST:
            self._reasons[kind].append(f"{where}: {reason}")

    @property
    def done(self) -> int:
        """How many calls have a final outcome."""
        return sum(self.counts.values())

    @property
    def ok(self) -> bool:
        """Whether nothing failed and nothing was invalid (drops are the blueprint's choice)."""
        return not (self.counts["failed"] or self.counts["invalid"])

    def tally(self) -> str:
        """One line: ``3 delivered, 1 dropped, 0 failed, 0 invalid``."""
        return ", ".join(f"{self.counts[kind]} {kind}" for kind in _KINDS)

    def summary(self) -> str:
        """The tally, then the first reasons of every outcome that has some."""
        lines = [f"{self.done} call(s): {self.tally()}"]
        for kind in _KINDS[1:]:
            reasons = self._reasons[kind]
            for reason in reasons:
                lines.append(
                    textwrap.fill(
                        reason, _WIDTH, initial_indent=f"{kind:<9}", subsequent_indent=" " * 11
                    )
                )
            if self.counts[kind] > len(reasons) and reasons:
                lines.append(f"{'':<9}... and {self.counts[kind] - len(reasons)} more {kind}")
        return "\n".join(lines) + "\n"


class Progress:
    """A one-line progress bar on a terminal stream, redrawn at most ten times a second.

    Args:
        stream: Where to draw (stderr).
        total: How many lines to expect, if known.
        delay: Seconds the run must last before the bar appears (so short runs stay quiet);
            None never draws it.
    """

    def __init__(self, stream: TextIO, total: int | None, *, delay: float | None) -> None:
        self._stream = stream
        self._total = total
        self._start = time.monotonic()
        self._delay = delay
        self._last = 0.0
        self._shown = False

    def update(self, outcomes: Outcomes, *, force: bool = False) -> None:
        """Redraw the bar when enough time has passed (or ``force``)."""
        now = time.monotonic()
        if self._delay is None or now - self._start < self._delay:
            return
        if not force and now - self._last < 0.1:
            return
        self._last = now
        self._shown = True
        done = outcomes.done
        if self._total:
            share = min(done / self._total, 1.0)
            filled = int(share * 20)
            head = f"[{'#' * filled}{'-' * (20 - filled)}] {share:4.0%} {done}/{self._total}"
        else:
            head = f"{done} sent"
        line = f"{head}  {outcomes.tally()}"[: _WIDTH - 1]
        self._stream.write(f"\r{line:<{_WIDTH - 1}}")
        self._stream.flush()

    def clear(self) -> None:
        """Blank the bar so another line can be written."""
        if self._shown:
            self._stream.write("\r" + " " * (_WIDTH - 1) + "\r")

    def finish(self, outcomes: Outcomes) -> None:
        """Draw the final state and end the line, if the bar was ever shown."""
        if self._shown:
            self.update(outcomes, force=True)
            self._stream.write("\n")
            self._stream.flush()
