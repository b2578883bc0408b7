"""What FakeKlaviyo remembers: profiles (merged as Klaviyo merges them), events, requests.

Writes arrive as already-validated JSON:API bodies, so nothing here raises on bad input.
Everything sits behind one re-entrant lock: the server holds it for a whole request
(``transaction``), which makes each request all-or-nothing and keeps ``request_index`` exact.
Reads hand out frozen snapshots built from deep copies, so a test cannot alter the fake's state
by mutating what it was given.
"""

from __future__ import annotations

import copy
import datetime as dt
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import attrs

from klaviyo_signal.testing.schema import JSON, error_record, pointer, profile_value_errors

__all__ = ["FakeEvent", "FakeImportJob", "FakeProfile", "FakeRequest", "FakeState"]

_RESERVED = frozenset({"email", "phone_number", "external_id", "anonymous_id", "_kx", "meta"})


@attrs.frozen
class FakeProfile:
    """A profile as the fake holds it now, after every merge so far.

    Attributes:
        id: The fake's profile id (stable across merges: the oldest profile survives).
        anonymous_ids: Every ``anonymous_id`` seen for this person, oldest first.
        attributes: Standard attributes (``first_name``, ``location`` ...), minus identifiers.
        properties: Custom properties.
        subscriptions: Consent per channel and message type, e.g.
            ``{"email": {"marketing": {"consent": "SUBSCRIBED"}}}``.
        lists: Ids of the lists the profile was subscribed to, in order.
    """

    id: str
    email: str | None
    phone_number: str | None
    external_id: str | None
    anonymous_ids: tuple[str, ...]
    attributes: dict[str, JSON]
    properties: dict[str, JSON]
    subscriptions: dict[str, JSON]
    lists: tuple[str, ...]


@attrs.frozen
class FakeEvent:
    """One recorded event; ``profile`` is the snapshot of its profile at read time."""

    metric: str
    properties: dict[str, JSON]
    value: float | None
    value_currency: str | None
    time: str | None
    unique_id: str | None
    profile: FakeProfile
    request_index: int
    backfill: bool = False
    """Whether the event was sent as a backfill (recorded without triggering flows)."""


@attrs.frozen
class FakeRequest:
    """One request the fake received; ``status`` is None when its connection was dropped.

    Header names are lower-cased and the API key in ``authorization`` is masked.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: JSON
    status: int | None


@attrs.frozen
class FakeImportJob:
    """A bulk profile import job as the fake holds it now.

    Attributes:
        id: The job id Klaviyo's 202 answer named.
        status: ``"queued"`` until ``import_delay`` has passed, then ``"complete"``.
        total_count: Profiles in the job.
        completed_count: Profiles imported (after completion).
        failed_count: Profiles refused, each with an import error.
        created_index: The ``request_index`` of the POST that created it.
        completed_index: The index of the first request the fake answered after the job was
            imported (its profiles were merged just before), or None while it is not.
    """

    id: str
    status: str
    total_count: int
    completed_count: int
    failed_count: int
    created_index: int
    completed_index: int | None


@attrs.define
class _ImportJob:
    id: str
    profiles: list[JSON]
    created: float
    created_at: str
    created_index: int
    delay: float
    status: str = "queued"
    completed_at: str | None = None
    completed_index: int | None = None
    errors: list[JSON] = attrs.Factory(list)

    def document(self) -> JSON:
        failed = len(self.errors)
        done = self.status == "complete"
        return {
            "type": "profile-bulk-import-job",
            "id": self.id,
            "attributes": {
                "status": self.status,
                "created_at": self.created_at,
                "total_count": len(self.profiles),
                "completed_count": len(self.profiles) - failed if done else 0,
                "failed_count": failed,
                "completed_at": self.completed_at,
                "expires_at": None,
                "started_at": self.created_at if self.status != "queued" else None,
            },
            "relationships": {"lists": {"data": []}},
            "links": {"self": f"https://a.klaviyo.com/api/profile-bulk-import-jobs/{self.id}/"},
        }

    def snapshot(self) -> FakeImportJob:
        failed = len(self.errors)
        done = self.status == "complete"
        return FakeImportJob(
            id=self.id,
            status=self.status,
            total_count=len(self.profiles),
            completed_count=len(self.profiles) - failed if done else 0,
            failed_count=failed,
            created_index=self.created_index,
            completed_index=self.completed_index,
        )


@attrs.define
class _Profile:
    id: str
    email: str | None = None
    phone_number: str | None = None
    external_id: str | None = None
    anonymous_ids: list[str] = attrs.Factory(list)
    kx_ids: list[str] = attrs.Factory(list)
    attributes: dict[str, JSON] = attrs.Factory(dict)
    properties: dict[str, JSON] = attrs.Factory(dict)
    subscriptions: dict[str, JSON] = attrs.Factory(dict)
    lists: list[str] = attrs.Factory(list)

    def matches(self, attributes: Mapping[str, JSON]) -> bool:
        email = attributes.get("email")
        # Klaviyo treats email addresses case-insensitively.
        return (
            bool(email and self.email and email.lower() == self.email.lower())
            or bool(
                attributes.get("phone_number") and attributes["phone_number"] == self.phone_number
            )
            or bool(attributes.get("external_id") and attributes["external_id"] == self.external_id)
            or attributes.get("anonymous_id") in self.anonymous_ids
            or attributes.get("_kx") in self.kx_ids
        )

    def snapshot(self) -> FakeProfile:
        return FakeProfile(
            id=self.id,
            email=self.email,
            phone_number=self.phone_number,
            external_id=self.external_id,
            anonymous_ids=tuple(self.anonymous_ids),
            attributes=copy.deepcopy(self.attributes),
            properties=copy.deepcopy(self.properties),
            subscriptions=copy.deepcopy(self.subscriptions),
            lists=tuple(self.lists),
        )


@attrs.define
class _Event:
    profile_id: str
    metric: str
    attributes: dict[str, JSON]
    dedupe_key: str
    request_index: int


class FakeState:
    """The fake's memory; every method is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._profiles: dict[str, _Profile] = {}
        self._merged_into: dict[str, str] = {}
        self._events: list[_Event] = []
        self._requests: list[FakeRequest] = []
        self._imports: dict[str, _ImportJob] = {}
        self.import_delay = 0.0
        """Seconds a bulk profile import job stays queued/processing before it is imported."""

    def reset(self) -> None:
        """Forget every profile, event, request and import job."""
        with self._lock:
            self._profiles.clear()
            self._merged_into.clear()
            self._events.clear()
            self._requests.clear()
            self._imports.clear()

    @contextmanager
    def transaction(self) -> Iterator[int]:
        """Hold the lock for one request; yields the index its FakeRequest will get.

        Import jobs whose delay has passed are imported first: Klaviyo works through its
        queue between requests.
        """
        with self._lock:
            index = len(self._requests)
            self._run_imports(index)
            yield index

    def add_import_job(
        self, profiles: list[JSON], index: int, now: dt.datetime, delay: float
    ) -> JSON:
        """Queue a bulk profile import job; return its JSON:API resource (status queued)."""
        with self._lock:
            job = _ImportJob(
                id=uuid.uuid4().hex[:26].upper(),
                profiles=copy.deepcopy(profiles),
                created=time.monotonic(),
                created_at=now.isoformat(),
                created_index=index,
                delay=delay,
            )
            self._imports[job.id] = job
            return job.document()

    def import_job(self, job_id: str) -> _ImportJob | None:
        """Return the import job called ``job_id`` (imported first if it is due), or None."""
        with self._lock:
            self._run_imports(len(self._requests))
            return self._imports.get(job_id)

    def import_jobs(self) -> list[FakeImportJob]:
        """Snapshot every bulk profile import job, oldest first."""
        with self._lock:
            self._run_imports(len(self._requests))
            return [job.snapshot() for job in self._imports.values()]

    def _run_imports(self, index: int) -> None:
        """Import every job whose delay has passed: refuse bad values, merge the rest."""
        now = time.monotonic()
        for job in self._imports.values():
            if job.status == "complete":
                continue
            if now - job.created < job.delay:
                job.status = "processing" if now - job.created >= job.delay / 2 else "queued"
                continue
            for profile in job.profiles:
                attributes = profile.get("attributes") or {}
                refused = profile_value_errors(attributes)
                if refused:
                    job.errors += [
                        _import_error(field, detail, attributes) for field, detail in refused
                    ]
                    continue
                self.upsert(profile)
            job.status = "complete"
            job.completed_at = dt.datetime.now(dt.timezone.utc).isoformat()
            job.completed_index = index

    def add_request(self, request: FakeRequest) -> None:
        """Record a request (call inside ``transaction``)."""
        with self._lock:
            self._requests.append(request)

    def knows_profile_id(self, profile_id: str) -> bool:
        """Tell whether ``profile_id`` names a profile, possibly one merged into another."""
        with self._lock:
            return self._resolve(profile_id) in self._profiles

    def upsert(
        self, profile_data: Mapping[str, JSON], *, keep_identifiers: bool = False
    ) -> tuple[str, bool]:
        """Create or update the profile a JSON:API profile object names.

        Profiles matched by any identifier (or by ``id``) are merged into the oldest of them.
        ``keep_identifiers``: set only the identifiers the profile lacks (the client-side
        endpoint's rule).

        Returns:
            The profile id and whether a new profile was created.
        """
        with self._lock:
            attributes: Mapping[str, JSON] = profile_data.get("attributes") or {}
            wanted = self._resolve(profile_data.get("id") or "")
            # Oldest first: dicts keep insertion order, and the oldest profile survives merges.
            found = [p for p in self._profiles.values() if p.id == wanted or p.matches(attributes)]
            created = not found
            profile = found[0] if found else self._new_profile()
            for other in found[1:]:
                self._absorb(profile, other)
            meta = profile_data.get("meta") or attributes.get("meta") or {}
            _apply(profile, attributes, meta.get("patch_properties") or {}, keep_identifiers)
            return profile.id, created

    def record_event(
        self, profile_id: str, attributes: Mapping[str, JSON], request_index: int, now: dt.datetime
    ) -> bool:
        """Record an event unless its profile already has one with this metric and unique_id.

        Without ``unique_id`` Klaviyo dedupes on the event time truncated to the second (the
        time the request arrived when ``time`` is absent), and so does the fake.

        Returns:
            Whether the event was recorded.
        """
        with self._lock:
            metric = attributes["metric"]["data"]["attributes"]["name"]
            key = attributes.get("unique_id") or _second(attributes.get("time"), now)
            target = self._resolve(profile_id)
            for event in self._events:
                same = self._resolve(event.profile_id) == target and event.metric == metric
                if same and event.dedupe_key == key:
                    return False
            self._events.append(
                _Event(target, metric, copy.deepcopy(dict(attributes)), key, request_index)
            )
            return True

    def set_consent(
        self, profile_id: str, subscriptions: Mapping[str, JSON], extra: Mapping[str, JSON]
    ) -> None:
        """Store consent records: ``{"email": {"marketing": {"consent": ...}}}``."""
        with self._lock:
            profile = self._profiles[self._resolve(profile_id)]
            for channel, kinds in subscriptions.items():
                for kind, params in (kinds or {}).items():
                    if params is not None:
                        record = {**params, **extra}
                        profile.subscriptions.setdefault(channel, {})[kind] = record

    def set_list(self, profile_id: str, list_id: str, *, member: bool) -> None:
        """Add the profile to, or remove it from, a list."""
        with self._lock:
            lists = self._profiles[self._resolve(profile_id)].lists
            if member and list_id not in lists:
                lists.append(list_id)
            elif not member and list_id in lists:
                lists.remove(list_id)

    def profile(self, profile_id: str) -> FakeProfile:
        """Snapshot one profile by id (following merges)."""
        with self._lock:
            return self._profiles[self._resolve(profile_id)].snapshot()

    def profiles(self) -> list[FakeProfile]:
        """Snapshot every profile, oldest first."""
        with self._lock:
            self._run_imports(len(self._requests))
            return [p.snapshot() for p in self._profiles.values()]

    def events(self) -> list[FakeEvent]:
        """Snapshot every recorded event, oldest first."""
        with self._lock:
            self._run_imports(len(self._requests))
            snapshots = {p.id: p.snapshot() for p in self._profiles.values()}
            return [self._event_snapshot(e, snapshots) for e in self._events]

    def requests(self) -> list[FakeRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def _event_snapshot(self, event: _Event, profiles: dict[str, FakeProfile]) -> FakeEvent:
        attributes = copy.deepcopy(event.attributes)
        return FakeEvent(
            metric=event.metric,
            properties=attributes["properties"],
            value=attributes.get("value"),
            value_currency=attributes.get("value_currency"),
            time=attributes.get("time"),
            unique_id=attributes.get("unique_id"),
            profile=profiles[self._resolve(event.profile_id)],
            request_index=event.request_index,
            backfill=bool(attributes.get("backfill")),
        )

    def _new_profile(self) -> _Profile:
        profile = _Profile(id=uuid.uuid4().hex[:26].upper())
        self._profiles[profile.id] = profile
        return profile

    def _resolve(self, profile_id: str) -> str:
        while profile_id in self._merged_into:
            profile_id = self._merged_into[profile_id]
        return profile_id

    def _absorb(self, survivor: _Profile, other: _Profile) -> None:
        # The older profile wins every conflict; the younger one only fills gaps.
        survivor.email = survivor.email or other.email
        survivor.phone_number = survivor.phone_number or other.phone_number
        survivor.external_id = survivor.external_id or other.external_id
        survivor.anonymous_ids += [
            a for a in other.anonymous_ids if a not in survivor.anonymous_ids
        ]
        survivor.kx_ids += [k for k in other.kx_ids if k not in survivor.kx_ids]
        location = {
            **other.attributes.get("location", {}),
            **survivor.attributes.get("location", {}),
        }
        survivor.attributes = {**other.attributes, **survivor.attributes}
        if location:
            survivor.attributes["location"] = location
        survivor.properties = {**other.properties, **survivor.properties}
        for channel, kinds in other.subscriptions.items():
            survivor.subscriptions[channel] = {**kinds, **survivor.subscriptions.get(channel, {})}
        survivor.lists += [x for x in other.lists if x not in survivor.lists]
        del self._profiles[other.id]
        self._merged_into[other.id] = survivor.id


def _apply(
    profile: _Profile,
    attributes: Mapping[str, JSON],
    patch: Mapping[str, JSON],
    keep_identifiers: bool = False,
) -> None:
    # Identifiers set to null are ignored (they only find profiles); any other standard
    # attribute set to null is cleared, as profile-import documents.
    if keep_identifiers:
        profile.email = profile.email or attributes.get("email")
        profile.phone_number = profile.phone_number or attributes.get("phone_number")
        profile.external_id = profile.external_id or attributes.get("external_id")
    else:
        profile.email = attributes.get("email") or profile.email
        profile.phone_number = attributes.get("phone_number") or profile.phone_number
        profile.external_id = attributes.get("external_id") or profile.external_id
    for name, ids in (("anonymous_id", profile.anonymous_ids), ("_kx", profile.kx_ids)):
        if attributes.get(name) and attributes[name] not in ids:
            ids.append(attributes[name])
    for name, value in attributes.items():
        if name in _RESERVED or name in ("properties", "location", "subscriptions"):
            continue
        if value is None:
            profile.attributes.pop(name, None)
        else:
            profile.attributes[name] = copy.deepcopy(value)
    if "location" in attributes:
        _merge_location(profile, attributes["location"])
    profile.properties.update(copy.deepcopy(attributes.get("properties") or {}))
    _patch(profile.properties, patch)


def _merge_location(profile: _Profile, location: Mapping[str, JSON] | None) -> None:
    if location is None:
        profile.attributes.pop("location", None)
        return
    merged = {**profile.attributes.get("location", {}), **location}
    profile.attributes["location"] = {k: v for k, v in merged.items() if v is not None}


def _patch(properties: dict[str, JSON], patch: Mapping[str, JSON]) -> None:
    for key, value in (patch.get("append") or {}).items():
        current = properties.get(key)
        items = list(current) if isinstance(current, list) else [] if current is None else [current]
        properties[key] = [*items, value]
    for key, value in (patch.get("unappend") or {}).items():
        if isinstance(properties.get(key), list):
            properties[key] = [item for item in properties[key] if item != value]
    unset = patch.get("unset") or []
    for key in [unset] if isinstance(unset, str) else unset:
        properties.pop(key, None)


def _second(time: str | None, now: dt.datetime) -> str:
    if time is None:
        return now.replace(microsecond=0).isoformat()
    parsed = dt.datetime.fromisoformat(time.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc).replace(microsecond=0).isoformat()


def _import_error(field: str, detail: str, attributes: Mapping[str, JSON]) -> JSON:
    """One import error as Klaviyo lists it: its record, and the profile as it was sent."""
    record = error_record(400, detail, source_pointer=pointer(["data", "attributes", field]))
    return {
        "type": "import-error",
        "id": record["id"],
        "attributes": {
            "code": record["code"],
            "title": record["title"],
            "detail": detail,
            "source": record["source"],
            "original_payload": copy.deepcopy(dict(attributes)),
        },
    }
