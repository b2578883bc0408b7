"""Bulk jobs: queued events grouped by profile, encoded one event at a time, sized to fit.

``POST /api/event-bulk-create-jobs`` takes one item per profile, each with that profile's
events, up to 1,000 events and 5 MB per job. Each event is encoded on its own as it is
queued for a job, so the worker never holds the GIL for one long encode of a 5 MB body,
the exact size is known before a job is full, and a job resent after a partial failure
is re-joined from bytes, not encoded again.

The JSON:API shape stays in ``_klaviyo/wire``: this module joins that module's pieces
(the job's frame, each item's frame, each event's bytes), so it knows that the items and
the events are JSON arrays, nothing more.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from .._blueprint.properties import apply_properties
from .._blueprint.record import (
    ITEM_CONSENT,
    ITEM_CURRENCY,
    ITEM_PAIRS,
    ITEM_TIME,
    ITEM_UNIQUE_ID,
    ITEM_VALUE,
    IdentityKey,
)
from .._blueprint.rules import Rule
from .._klaviyo.json import JSON
from .._klaviyo.limits import MAX_JOB_BYTES, MAX_JOB_EVENTS
from .._klaviyo.models import IDENTIFIER_NAMES, Event, Identity, Profile
from .._klaviyo.wire import BULK_JOB_FRAME, bulk_event_bytes, bulk_item_frame, event_bytes

__all__ = [
    "BulkJob",
    "Item",
    "OpenJob",
    "encode_event",
    "encode_queued",
    "failed_items",
    "failed_parts",
    "unique_key",
]

_FRAME_CACHE = 4096
# Items listed between two calls of ``BulkJob.body``'s ``between`` (a few microseconds).
_BODY_STEP = 64


def unique_key(metric: str, unique_id: str) -> str:
    """Return what a bulk job may hold once: an event's metric and unique_id, as one str."""
    return metric + "\x00" + unique_id


def encode_event(event: Event) -> bytes:
    """Return the bytes of one event as an element of a bulk item's events array."""
    return bulk_event_bytes(event)


def encode_queued(item: tuple[object, ...], rule: Rule) -> bytes:
    """Return the bytes of a queued simple call's event, read straight from its queue item.

    ``(seq, (), *record)`` (``_blueprint/record``): no ``Event`` is built, as this runs
    for every queued call.
    """
    pairs = item[ITEM_PAIRS:]
    base = dict(zip(pairs[::2], pairs[1::2], strict=True))
    properties = apply_properties(rule.properties, base, _NO_VIEW)  # type: ignore[arg-type]
    consent = item[ITEM_CONSENT]
    properties["consent"] = {} if consent is None else dict(consent)  # type: ignore[call-overload]
    return event_bytes(
        rule.metric,
        properties,
        item[ITEM_TIME],  # type: ignore[arg-type]
        item[ITEM_UNIQUE_ID],  # type: ignore[arg-type]
        value=item[ITEM_VALUE],  # type: ignore[arg-type]
        value_currency=item[ITEM_CURRENCY],  # type: ignore[arg-type]
    )


_NO_VIEW: dict[str, JSON] = {}  # a simple rule has no source paths to read


def _pairs(key: IdentityKey) -> Iterator[tuple[str, str]]:
    """Yield a profile's identifiers as (name, value) pairs, to spot the same person."""
    for name, value in zip(IDENTIFIER_NAMES, key, strict=True):
        if value is not None:
            yield name, value


Item = tuple["Profile | None", tuple[bytes, bytes], "bytes | bytearray", tuple[object, ...]]
"""One profile and its events: the profile (None: just the identifiers, which the frame
holds), the frame around the events, the events joined by commas, and who waits for each.

A tuple of bytes (a bytearray once a second event joins) and a tuple of ints, not an
object: an open job holds one item per profile (often one per event); why that matters
is said once, in ``_blueprint/record``."""


class BulkJob:
    """A sealed job: its items, ready to send (and to re-send without some of them)."""

    __slots__ = ("_keys", "_who", "items")
    endpoint = "POST /api/event-bulk-create-jobs"
    ITEMS = "/data/attributes/events-bulk-create/data"
    """Where Klaviyo's error pointers find the items (one per profile)."""
    PARTS = "/attributes/events/data"
    """Where, inside an item, Klaviyo's error pointers find its events."""

    def __init__(self, items: Sequence[Item], keys: Iterable[IdentityKey] = ()) -> None:
        self.items = list(items)
        self._keys = keys  # every profile in the job (the open job's index, not a copy)
        self._who: set[tuple[str, str]] | None = None

    def mentions(self, identity: Identity) -> bool:
        """Whether any event here is for a profile sharing an identifier with ``identity``."""
        return any(pair in self.who() for pair in _pairs(identity.key()))

    def who(self) -> set[tuple[str, str]]:
        """Every identifier of a profile in the job, as (name, value) pairs."""
        if self._who is None:
            self._who = {pair for key in self._keys for pair in _pairs(key)}
        return self._who

    def item_count(self) -> int:
        """How many items (profiles) the job carries."""
        return len(self.items)

    def owners_of(self, index: int) -> list[object]:
        """Who waits for the events of one item, one entry per event, in their order."""
        return list(self.items[index][3])

    def body(self, between: Callable[[], object] = lambda: None) -> bytes:
        """Return the request body; ``between()`` runs after every ``_BODY_STEP`` items, so
        the worker can let other threads have the GIL while it lists a full job's parts.
        The join at the end copies the bytes in one C call (at most Klaviyo's 5 MB)."""
        head, tail = BULK_JOB_FRAME
        parts: list[bytes | bytearray] = [head]
        items = self.items
        for start in range(0, len(items), _BODY_STEP):
            if start:
                between()
            for item in items[start : start + _BODY_STEP]:
                frame = item[1]
                parts += (frame[0], item[2], frame[1], b",")
        if self.items:
            parts.pop()  # the comma after the last item
        parts.append(tail)
        return b"".join(parts)

    def owners(self) -> list[object]:
        """Return who waits for each event, one entry per event."""
        return [owner for item in self.items for owner in item[3]]

    def without(
        self, indexes: Iterable[int], parts: Mapping[int, Iterable[int]] | None = None
    ) -> BulkJob:
        """Return this job minus the items at ``indexes`` and the events named in ``parts``.

        Args:
            indexes: Items to drop whole.
            parts: Item index -> the indexes of its events to drop; an item left with no
                event is dropped.
        """
        gone = set(indexes)
        kept: list[Item] = []
        for i, item in enumerate(self.items):
            if i in gone:
                continue
            drop = set(parts.get(i, ())) if parts else set()
            if not drop:
                kept.append(item)
                continue
            events = [e for j, e in enumerate(_split_events(item[2])) if j not in drop]
            if events:
                owners = tuple(o for j, o in enumerate(item[3]) if j not in drop)
                kept.append((item[0], item[1], b",".join(events), owners))
        return BulkJob(kept, self._keys)


class OpenJob:
    """The job being filled: events join their profile's item until the job is full."""

    def __init__(self) -> None:
        head, tail = BULK_JOB_FRAME
        self._base = len(head) + len(tail)
        # Encoded profile frames, kept across jobs: the same visitors come back job after job.
        self._frames: dict[IdentityKey, tuple[Profile, tuple[bytes, bytes]]] = {}
        self._clear()

    def _clear(self) -> None:
        self.items: list[Item] = []
        self.events = 0
        self.size = self._base
        self.oldest: float | None = None
        self._by_key: dict[IdentityKey, int] = {}  # -> the profile's item in self.items
        # metric + NUL + unique_id of every event here (plain strings: never visited by
        # the garbage collector): Klaviyo fails a whole job that repeats one for a profile.
        self._uniques: set[str] = set()
        # Every identifier in the job, built only once an identify asks (see mentions).
        self._who: set[tuple[str, str]] | None = None

    def __len__(self) -> int:
        return self.events

    def add(
        self,
        event_bytes: bytes,
        profile: Profile | IdentityKey,
        owner: object,
        now: float,
        unique: str | None = None,
    ) -> bool:
        """Add one encoded event for ``profile``, tagged with ``owner``.

        An identifier tuple stands for the profile of just those identifiers (no Profile
        object is built for the events of most calls).

        Args:
            unique: ``unique_key(metric, unique_id)`` of the event: a job holds each once
                (None: not checked).

        Returns:
            False, changing nothing, when the event does not fit (1,000 events or the
            size), or repeats an event's metric and unique_id (Klaviyo would refuse the
            whole job since revision 2025-01-15): it goes in the next job.
        """
        if self.events >= MAX_JOB_EVENTS or (unique is not None and unique in self._uniques):
            return False
        rich: Profile | None
        if isinstance(profile, tuple):
            key, rich = profile, None
        else:
            # A bare Profile is the same item as bare identifiers: one person, one item.
            key, rich = profile.identity.key(), None if profile.bare() else profile
        index = self._by_key.get(key)
        item = None if index is None else self.items[index]
        if item is None or item[0] != rich:
            # A new item; the same person with other profile attributes (traits) gets an
            # item of its own, so neither version's attributes are lost.
            frame = self._frame(key, rich)
            grown = len(frame[0]) + len(frame[1]) + len(event_bytes) + (1 if self.items else 0)
            if self.size + grown > MAX_JOB_BYTES:
                return False
            self._by_key[key] = len(self.items)
            # The event's own bytes: most items keep one event, so no copy until a second.
            self.items.append((rich, frame, event_bytes, (owner,)))
            if self._who is not None:
                self._who.update(_pairs(key))
        else:
            grown = len(event_bytes) + 1
            if self.size + grown > MAX_JOB_BYTES:
                return False
            events = item[2]
            if type(events) is bytes:
                events = bytearray(events)  # appended to in place from the second event on
            events += b","
            events += event_bytes
            self.items[index] = (rich, item[1], events, (*item[3], owner))  # type: ignore[index]
        self.size += grown
        self.events += 1
        if unique is not None:
            self._uniques.add(unique)
        if self.oldest is None:
            self.oldest = now
        return True

    def _frame(self, key: IdentityKey, profile: Profile | None) -> tuple[bytes, bytes]:
        if profile is None:
            return bulk_item_frame(key)  # cheap: a few identifiers
        cached = self._frames.get(key)
        if cached is not None and cached[0] == profile:
            return cached[1]
        if len(self._frames) >= _FRAME_CACHE:
            self._frames.clear()
        frame = bulk_item_frame(profile)
        self._frames[key] = (profile, frame)
        return frame

    def mentions(self, identity: Identity) -> bool:
        """Whether any event here is for a profile sharing an identifier with ``identity``."""
        if self._who is None:
            self._who = {pair for key in self._by_key for pair in _pairs(key)}
        return any(pair in self._who for pair in _pairs(identity.key()))

    def seal(self) -> BulkJob:
        """Return the job to send and start an empty one."""
        job = BulkJob(self.items, self._by_key)
        self._clear()
        return job

    def due(self, cutoff: float | None) -> list[BulkJob]:
        """Seal the job if its oldest event was queued at ``cutoff`` or before.

        Args:
            cutoff: A time from the worker's clock, or None to seal any non-empty job.

        Returns:
            The sealed job, or nothing when no event waits long enough.
        """
        if self.oldest is None or (cutoff is not None and self.oldest > cutoff):
            return []
        return [self.seal()]


def _split_events(events: bytes | bytearray) -> list[bytes]:
    """Cut an item's comma-joined events back into each event's bytes (only after a 400).

    ``_klaviyo/wire`` writes compact JSON, so each event ends where the decoder stops and the next
    starts one comma later; the bytes are sliced, not encoded again.
    """
    text = bytes(events).decode("utf-8")
    decoder = json.JSONDecoder()
    found: list[bytes] = []
    at = 0
    while at < len(text):
        end = decoder.raw_decode(text, at)[1]
        found.append(text[at:end].encode("utf-8"))
        at = end + 1
    return found


@functools.cache
def _item_pointer(items: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(items)}/(\d+)(?:/|$)")


@functools.cache
def _part_pointer(items: str, parts: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(items)}/(\d+){re.escape(parts)}/(\d+)(?:/|$)")


def failed_parts(
    pointers: Iterable[str | None], items: str, parts: str | None
) -> dict[int, set[int] | None] | None:
    """Return what Klaviyo's error pointers name: item index -> its named parts, or None.

    Args:
        pointers: The ``source.pointer`` of each error.
        items: The JSON pointer of the job's items array (a job class's ``ITEMS``).
        parts: Where an item's parts (a bulk item's events) sit inside it, or None when
            an item is refused whole.

    Returns:
        None when any error names no item (then the whole job failed). An item maps to
        None when an error names the item itself (its profile, say): all of it failed.
    """
    item_pattern = _item_pointer(items)
    part_pattern = None if parts is None else _part_pointer(items, parts)
    found: dict[int, set[int] | None] = {}
    for pointer in pointers:
        text = pointer or ""
        match = item_pattern.match(text)
        if match is None:
            return None
        index = int(match.group(1))
        part = None if part_pattern is None else part_pattern.match(text)
        if part is None:
            found[index] = None
            continue
        named = found.setdefault(index, set())
        if named is not None:
            named.add(int(part.group(2)))
    return found or None


def failed_items(pointers: Iterable[str | None], items: str) -> set[int] | None:
    """Return the indexes of the items Klaviyo's error pointers name.

    Args:
        pointers: The ``source.pointer`` of each error.
        items: The JSON pointer of the job's items array (a job class's ``ITEMS``).

    Returns None when any error names no item (then the whole job failed).
    """
    pattern = _item_pointer(items)
    found: set[int] = set()
    for pointer in pointers:
        match = pattern.match(pointer or "")
        if match is None:
            return None
        found.add(int(match.group(1)))
    return found or None
