"""Profile bulk import jobs: queued identifies grouped into Klaviyo's bulk profile import.

``POST /api/profile-bulk-import-jobs`` takes up to 10,000 profiles and 5 MB per job (each
profile at most 100 KB). The open job keeps one entry per person: an identify whose
identifiers agree with an entry's (none differs, one at least is shared) is merged into it,
its traits over the earlier ones, which is what importing the two one after the other would
leave on the profile. An identify that shares an identifier with an entry but names another
value for one (an email change) seals the job first, so the change reaches Klaviyo after
what it changes. A job is sealed when full, when its oldest call is ``flush_interval`` old,
or on ``flush()``/``close()``: the moments an event job is sealed (``due``).

Klaviyo answers 202 and imports the job later, so an accepted job is not yet a delivered
one: the worker polls the job (``Poll`` units, paced by their own endpoints' limits) and
then its import errors, and only then ends each call, ``failed`` with Klaviyo's detail for
a profile it refused, ``delivered`` for one it took.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from urllib.parse import parse_qs, quote, urlsplit

import attrs

from .._klaviyo.json import JSON
from .._klaviyo.limits import (
    IMPORT_ERRORS_PAGE,
    MAX_IMPORT_ENTRY_BYTES,
    MAX_IMPORT_PROFILES,
    MAX_JOB_BYTES,
)
from .._klaviyo.models import IDENTIFIER_NAMES, Identity, Profile
from .._klaviyo.wire import PROFILE_JOB_FRAME, bulk_profile_bytes

__all__ = [
    "IMPORT_ERRORS",
    "JOB_STATUS",
    "PROFILE_JOBS",
    "OpenProfiles",
    "Pair",
    "Poll",
    "ProfileJob",
    "job_of",
    "merge",
    "pairs_of",
]

PROFILE_JOBS = "POST /api/profile-bulk-import-jobs"
JOB_STATUS = "GET /api/profile-bulk-import-jobs/{id}"
IMPORT_ERRORS = "GET /api/profile-bulk-import-jobs/{id}/import-errors"
FIRST_POLL = 0.5
"""Seconds after the 202 before the job is first polled; each next poll waits twice as long."""
MAX_POLL_INTERVAL = 10.0
IMPORT_TIMEOUT = 600.0
"""Seconds a job may take Klaviyo to import before its calls end failed (read at run time)."""
_TEXT = ("first_name", "last_name", "organization", "title", "image", "locale")

Pair = tuple[str, str]


def pairs_of(identity: Identity) -> Iterator[Pair]:
    """Yield a profile's identifiers as (name, value) pairs, to spot the same person."""
    for name, value in zip(IDENTIFIER_NAMES, identity.key(), strict=True):
        if value is not None:
            yield name, value


def merge(earlier: Profile, later: Profile) -> Profile | None:
    """Return one profile with ``later``'s traits over ``earlier``'s, or None on a conflict.

    A conflict is an identifier both name with different values: they may be two people,
    or one person's changed email, and either way must not become one entry.
    """
    ids: dict[str, str | None] = {}
    for name, old, new in zip(
        IDENTIFIER_NAMES, earlier.identity.key(), later.identity.key(), strict=True
    ):
        if old is not None and new is not None and old != new:
            return None
        ids[name] = new if new is not None else old
    fields: dict[str, object] = {
        name: getattr(later, name) if getattr(later, name) is not None else getattr(earlier, name)
        for name in _TEXT
    }
    location = later.location or earlier.location
    if earlier.location is not None and later.location is not None:
        newer = {k: v for k, v in attrs.asdict(later.location).items() if v is not None}
        location = attrs.evolve(earlier.location, **newer)
    properties = later.properties
    if earlier.properties:
        properties = {**earlier.properties, **later.properties}
    return Profile(
        identity=Identity(**ids),
        location=location,
        properties=properties,
        **fields,  # type: ignore[arg-type]
    )


@attrs.define
class _Entry:
    """One person in a job: the merged profile, its bytes, and each call's own profile."""

    profile: Profile
    data: bytes
    owners: list[int]
    originals: list[Profile]


class ProfileJob:
    """A sealed profile import job: sent, then polled until Klaviyo has imported it."""

    __slots__ = (
        "_who",
        "accepted_at",
        "entries",
        "failures",
        "fallback_order",
        "job_id",
        "order",
        "polls",
        "status",
        "unmatched",
        "waits",
    )
    endpoint = PROFILE_JOBS
    ITEMS = "/data/attributes/profiles/data"
    """Where Klaviyo's error pointers find the entries (one per person)."""

    def __init__(self, entries: list[_Entry], waits: Mapping[str, int]) -> None:
        self.entries = entries
        self.waits = dict(waits)
        """Outbox -> the order of the last unit there this job must wait for."""
        self.job_id: str | None = None
        self.accepted_at = 0.0
        self.polls = 0
        self.status = "queued"
        self.failures: dict[int, str] = {}
        """Entry index -> Klaviyo's words on why it refused that profile."""
        self.unmatched = 0
        self.order = -1
        """Its place in the worker's outboxes, once sealed."""
        self.fallback_order: int | None = None
        """Once sent through profile-import instead: the order of its last such request."""
        self._who: set[Pair] | None = None

    def body(self) -> bytes:
        """Return the request body."""
        head, tail = PROFILE_JOB_FRAME
        return head + b",".join(entry.data for entry in self.entries) + tail

    def owners(self) -> list[object]:
        """Return who waits for each entry, one element per identify call."""
        return [owner for entry in self.entries for owner in entry.owners]

    def item_count(self) -> int:
        """How many entries (people) the job carries."""
        return len(self.entries)

    def owners_of(self, index: int) -> list[object]:
        """Who waits for one entry."""
        return list(self.entries[index].owners)

    def without(self, indexes: Iterable[int]) -> ProfileJob:
        """Return this job minus the entries at ``indexes`` (to send again after a 400)."""
        gone = set(indexes)
        kept = [entry for i, entry in enumerate(self.entries) if i not in gone]
        return ProfileJob(kept, self.waits)

    def who(self) -> set[Pair]:
        """Every identifier in the job."""
        if self._who is None:
            self._who = {
                pair for entry in self.entries for pair in pairs_of(entry.profile.identity)
            }
        return self._who

    def mentions(self, identity: Identity) -> bool:
        """Whether an entry shares an identifier with ``identity``."""
        who = self.who()
        return any(pair in who for pair in pairs_of(identity))

    def originals(self) -> list[tuple[int, Profile]]:
        """Each call's own profile with its owner, in call order (for profile-import)."""
        found = [
            (owner, profile)
            for entry in self.entries
            for owner, profile in zip(entry.owners, entry.originals, strict=True)
        ]
        found.sort(key=lambda pair: pair[0])
        return found

    def record_errors(self, body: JSON) -> str | None:
        """Note the import errors of one page; return the cursor of the next, or None."""
        data = body.get("data") if isinstance(body, dict) else None
        for record in data if isinstance(data, list) else ():
            attributes = record.get("attributes") if isinstance(record, dict) else None
            if not isinstance(attributes, dict):
                continue
            index = self._entry_of(attributes.get("original_payload"))
            if index is None:
                self.unmatched += 1
                continue
            detail = attributes.get("detail") or attributes.get("title") or "refused"
            source = attributes.get("source")
            where = source.get("pointer") if isinstance(source, dict) else None
            text = f"{detail} ({where})" if where else str(detail)
            old = self.failures.get(index)
            self.failures[index] = text if old is None else f"{old}; {text}"
        links = body.get("links") if isinstance(body, dict) else None
        following = links.get("next") if isinstance(links, dict) else None
        if not isinstance(following, str) or not following:
            return None
        cursor = parse_qs(urlsplit(following).query).get("page[cursor]")
        return cursor[0] if cursor else None

    def _entry_of(self, payload: object) -> int | None:
        """The entry an import error's ``original_payload`` is, by its identifiers."""
        if not isinstance(payload, dict):
            return None
        attributes = payload.get("attributes", payload)
        if not isinstance(attributes, dict):
            return None
        wanted = {
            (name, value)
            for name in IDENTIFIER_NAMES
            if isinstance(value := attributes.get(name), str) and value
        }
        if not wanted:
            return None
        for index, entry in enumerate(self.entries):
            # No two entries of a job share an identifier (see the module docstring).
            if wanted & set(pairs_of(entry.profile.identity)):
                return index
        return None


@attrs.define(eq=False)
class Poll:
    """One GET of a profile import job: its status, or a page of its import errors."""

    job: ProfileJob
    endpoint: str
    not_before: float
    cursor: str | None = None

    def path(self) -> str:
        """Return the request path, with its query."""
        job_id = quote(self.job.job_id or "", safe="")
        if self.endpoint == JOB_STATUS:
            return f"/api/profile-bulk-import-jobs/{job_id}"
        query = f"page%5Bsize%5D={IMPORT_ERRORS_PAGE}"
        if self.cursor is not None:
            query += f"&page%5Bcursor%5D={quote(self.cursor, safe='')}"
        return f"/api/profile-bulk-import-jobs/{job_id}/import-errors?{query}"

    def body(self) -> bytes:
        """A GET sends no body."""
        return b""

    def owners(self) -> list[object]:
        """Return who waits for the job."""
        return self.job.owners()


def job_of(body: JSON) -> tuple[str | None, str | None, int]:
    """Read a job document: (id, status, failed_count), None where absent."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        return None, None, 0
    attributes = data.get("attributes")
    attributes = attributes if isinstance(attributes, dict) else {}
    job_id = data.get("id")
    status = attributes.get("status")
    failed = attributes.get("failed_count")
    return (
        job_id if isinstance(job_id, str) and job_id else None,
        status if isinstance(status, str) else None,
        failed if isinstance(failed, int) and not isinstance(failed, bool) else 0,
    )


class OpenProfiles:
    """The profile job being filled; owned by the worker thread."""

    def __init__(self) -> None:
        head, tail = PROFILE_JOB_FRAME
        self._base = len(head) + len(tail)
        self._clear()

    def _clear(self) -> None:
        self.entries: list[_Entry] = []
        self.size = self._base
        self.oldest: float | None = None
        self._by_pair: dict[Pair, int] = {}
        self._waits: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def fits(self, profile: Profile) -> bool:
        """Whether a profile alone fits one entry (else it goes through profile-import)."""
        return len(bulk_profile_bytes(profile)) <= MAX_IMPORT_ENTRY_BYTES

    def add(
        self, profile: Profile, owner: int, now: float, waits: Sequence[tuple[str, int]]
    ) -> bool:
        """Add one identify's profile, merged into its person's entry if there is one.

        Args:
            profile: The call's profile (it fits an entry: see ``fits``).
            owner: The call's sequence number.
            now: The worker's clock.
            waits: The (outbox, order) units this identify must follow.

        Returns:
            False, changing nothing, when the profile names another value for an
            identifier of an entry, shares identifiers with two entries, or does not fit:
            the open job must be sealed first (then it starts the next one).
        """
        pairs = list(pairs_of(profile.identity))
        found = {self._by_pair[pair] for pair in pairs if pair in self._by_pair}
        if not found:
            data = bulk_profile_bytes(profile)
            grown = len(data) + (1 if self.entries else 0)
            if len(self.entries) >= MAX_IMPORT_PROFILES or self.size + grown > MAX_JOB_BYTES:
                return False
            index = len(self.entries)
            self.size += grown
            self.entries.append(_Entry(profile, data, [owner], [profile]))
            if self.oldest is None:
                self.oldest = now
        elif len(found) == 1:
            index = found.pop()
            entry = self.entries[index]
            both = merge(entry.profile, profile)
            if both is None:
                return False
            data = bulk_profile_bytes(both)
            grown = len(data) - len(entry.data)
            if len(data) > MAX_IMPORT_ENTRY_BYTES or self.size + grown > MAX_JOB_BYTES:
                return False
            self.size += grown
            entry.profile, entry.data = both, data
            entry.owners.append(owner)
            entry.originals.append(profile)
            pairs = list(pairs_of(both.identity))
        else:
            return False
        for pair in pairs:
            self._by_pair[pair] = index
        for outbox, order in waits:
            self._waits[outbox] = max(order, self._waits.get(outbox, order))
        return True

    @property
    def full(self) -> bool:
        """Whether the job holds Klaviyo's 10,000 profiles."""
        return len(self.entries) >= MAX_IMPORT_PROFILES

    def mentions_any(self, pairs: Iterable[Pair]) -> bool:
        """Whether an entry of the open job has one of these identifiers."""
        return any(pair in self._by_pair for pair in pairs)

    def seal(self) -> ProfileJob:
        """Return the job to send and start an empty one."""
        job = ProfileJob(self.entries, self._waits)
        self._clear()
        return job

    def due(self, cutoff: float | None) -> list[ProfileJob]:
        """Seal the job if its oldest call was queued at ``cutoff`` or before (None: any)."""
        if self.oldest is None or (cutoff is not None and self.oldest > cutoff):
            return []
        return [self.seal()]
