"""``send --resume STATE``: which lines of an input file already have a final outcome.

The state is one small JSON file, rewritten whole (a temporary file, then ``os.replace``)
about once a second, so a crash or ``kill -9`` at any moment leaves either the previous
version or the new one, never half of one. It holds the input's fingerprint (a rerun over
other bytes is refused), the line number below which every line is final, the runs of
final lines above it (few: only calls still in flight leave gaps), and the outcome counts
of every run so far.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping

from .lines import InputFile

__all__ = ["Checkpoint", "Finished", "StateError"]

_FORMAT = "klaviyo-signal send state"
_VERSION = 1


class StateError(ValueError):
    """The state file cannot be used for this input."""


class Finished:
    """Line numbers with a final outcome: all below ``below``, plus runs above it.

    Lines finish roughly in order, so the runs stay few (one gap per line still in
    flight) however long the file; each ``add`` is O(1).
    """

    def __init__(self, below: int = 1, runs: Iterable[tuple[int, int]] = ()) -> None:
        self.below = below
        self._starts: dict[int, int] = {}  # start -> end (exclusive)
        self._ends: dict[int, int] = {}  # end -> start
        for start, end in runs:
            self.add(start, end)

    def add(self, start: int, end: int | None = None) -> None:
        """Mark lines ``start`` to ``end`` (exclusive; default ``start + 1``) final.

        Each line is marked once: the caller marks a line when its outcome arrives.
        """
        end = start + 1 if end is None else end
        start = max(start, self.below)
        if end <= start:
            return
        if start in self._ends:  # a run ends where this one starts
            start = self._ends.pop(start)
            del self._starts[start]
        if end in self._starts:  # a run starts where this one ends
            new_end = self._starts.pop(end)
            del self._ends[new_end]
            end = new_end
        if start == self.below:
            self.below = end
        else:
            self._starts[start] = end
            self._ends[end] = start

    def runs(self) -> list[tuple[int, int]]:
        """The runs above ``below``, in order."""
        return sorted(self._starts.items())

    def skipper(self) -> Skipper:
        """A test for ascending line numbers: is this one final (as of now)?"""
        return Skipper(self.below, self.runs())


class Skipper:
    """Answers "already final?" for ascending line numbers, in O(1) each."""

    def __init__(self, below: int, runs: list[tuple[int, int]]) -> None:
        self._below = below
        self._runs = runs
        self._at = 0

    def __call__(self, number: int) -> bool:
        if number < self._below:
            return True
        runs = self._runs
        while self._at < len(runs) and runs[self._at][1] <= number:
            self._at += 1
        return self._at < len(runs) and runs[self._at][0] <= number


class Checkpoint:
    """The state file of one input: load it (or start afresh) and save it atomically.

    Args:
        path: The state file.
        source: The input it is for.

    Raises:
        StateError: The file exists but is not a state file, or is one for other input.
        OSError: It exists but cannot be read.
    """

    def __init__(self, path: str, source: InputFile) -> None:
        self.path = path
        self.source = source
        self.resumed = os.path.exists(path)
        self.counts: dict[str, int] = {}
        self.finished = Finished()
        if self.resumed:
            self._load()

    def _load(self) -> None:
        with open(self.path, encoding="utf-8") as stream:
            try:
                data = json.load(stream)
            except ValueError as exc:
                raise StateError(f"{self.path}: not a send state file ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise StateError(f"{self.path}: not a send state file")
        if data.get("version") != _VERSION:
            raise StateError(
                f"{self.path}: state format {data.get('version')!r}; this version reads {_VERSION}"
            )
        try:
            was = data["input"]
            same = (was["size"], was["sha256"]) == (self.source.size, self.source.sha256)
            finished = Finished(int(data["below"]), [(int(s), int(e)) for s, e in data["runs"]])
            counts = {str(k): int(v) for k, v in data["counts"].items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise StateError(f"{self.path}: a damaged send state file") from None
        if not same:
            raise StateError(
                f"{self.path} is the state of another input: {was['path']} "
                f"({was['size']} bytes, sha256 {str(was['sha256'])[:16]}...), not "
                f"{self.source.path} ({self.source.size} bytes, sha256 "
                f"{self.source.sha256[:16]}...); pass another --resume file to start afresh"
            )
        self.finished = finished
        self.counts = counts

    def snapshot(self, counts: Mapping[str, int]) -> dict[str, object]:
        """The state as of now (cheap; take it under the run's lock, ``write`` it outside)."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "input": {
                "path": os.path.abspath(self.source.path),
                "size": self.source.size,
                "sha256": self.source.sha256,
            },
            "below": self.finished.below,
            "runs": self.finished.runs(),
            "counts": dict(counts),
        }

    def write(self, snapshot: Mapping[str, object]) -> None:
        """Replace the state file with ``snapshot``: all of it or, after a crash, none.

        Raises:
            OSError: The file cannot be written.
        """
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as stream:
            json.dump(snapshot, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, self.path)
