"""FakeKlaviyo's HTTP side: routing, auth, faults, rate-limit windows, the endpoints.

One request runs through ``FakeServer.handle`` in the order Klaviyo's gateway would apply:
latency, injected faults, routing, authentication, ``revision``, rate limits, then the body.
Each request is answered while holding the state's lock, so it is all-or-nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import attrs

from klaviyo_signal._errors import NetworkError
from klaviyo_signal._klaviyo.operations import required_scopes
from klaviyo_signal._klaviyo.revisions import (
    DEFAULT_REVISION,
    FALL_FORWARD_OPT_OUT,
    PROFILE_JOBS_OPERATION,
    SUPPORTED_REVISIONS,
    Revision,
    revision,
)
from klaviyo_signal._klaviyo.transport import HTTPRequest, HTTPResponse
from klaviyo_signal.testing.schema import JSON
from klaviyo_signal.testing.state import FakeRequest, FakeState

from . import schema

__all__ = ["FakeServer", "InProcessTransport", "RateLimits"]

RateLimits = Mapping[str, tuple[int, int]]
"""``{"POST /api/events": (burst_per_window, steady_per_window)}``."""

_BURST_SECONDS = 1.0
_STEADY_SECONDS = 60.0
_AUTH = re.compile(r"^Klaviyo-API-Key (\S+)$")
_FAULT_TEXT = {
    400: ("invalid", "Invalid input.", "The payload provided in the request is invalid."),
    403: (
        "permission_denied",
        "You do not have permission to perform this action.",
        "Your API key is missing required scopes.",
    ),
    404: ("not_found", "Not found.", "Not found."),
    410: ("gone", "Gone.", "The revision you requested is no longer supported."),
}
_SERVER_ERROR = ("error", "A server error occurred.", "A server error occurred.")


_JSON_API = "application/vnd.api+json"
# The polling endpoints of a bulk profile import job (ids in the path).
_JOB_PATH = re.compile(r"^/api/profile-bulk-import-jobs/([^/]+)(/import-errors)?$")
_JOB_STATUS = "GET /api/profile-bulk-import-jobs/{id}"
_IMPORT_ERRORS = "GET /api/profile-bulk-import-jobs/{id}/import-errors"
_MAX_IMPORT_PROFILES = 10_000
_MAX_IMPORT_BYTES = 5_000_000
_MAX_IMPORT_PROFILE_BYTES = 100_000


@attrs.frozen
class Response:
    """What the handler writes back; ``body=None`` means an empty body.

    ``raw`` bytes, when set, are sent instead of the JSON-encoded ``body``.
    """

    status: int
    body: JSON = None
    headers: Mapping[str, str] = attrs.Factory(dict)
    raw: bytes | None = None
    content_type: str = _JSON_API


@attrs.frozen
class _Fault:
    status: int
    retry_after: float | None
    body: JSON | bytes
    content_type: str = _JSON_API
    headers: Mapping[str, str] = attrs.Factory(dict)


def published_rate_limits(revision_name: str = DEFAULT_REVISION) -> dict[str, tuple[int, int]]:
    """Klaviyo's per-endpoint (burst per second, steady per minute) limits in a revision."""
    return revision(revision_name).limits()


def _retired_today() -> frozenset[str]:
    return frozenset(r for r in SUPPORTED_REVISIONS if revision(r).status().state == "retired")


class RateWindows:
    """Fixed burst and steady windows per endpoint, aligned to the server's start."""

    def __init__(self, limits: RateLimits, time_scale: float) -> None:
        self._limits = dict(limits)
        self._lengths = (_BURST_SECONDS * time_scale, _STEADY_SECONDS * time_scale)
        self._counts: dict[tuple[str, int], tuple[int, int]] = {}
        self._started = time.monotonic()

    def restart(self) -> None:
        """Start the clock again with empty windows (the server just started)."""
        self._counts.clear()
        self._started = time.monotonic()

    def take(
        self, endpoint: str, limits: RateLimits | None = None
    ) -> tuple[float | None, dict[str, str]]:
        """Count one request, against ``limits`` (default: the ones given at start).

        Returns:
            Seconds until a window frees up if the request is over a limit (it is then not
            counted), else None; and the ``RateLimit-*`` headers for a non-429 answer.
        """
        limits = self._limits if limits is None else limits
        if endpoint not in limits:
            return None, {}
        elapsed = time.monotonic() - self._started
        windows = []
        for kind, (length, limit) in enumerate(zip(self._lengths, limits[endpoint], strict=True)):
            index = math.floor(elapsed / length)
            seen, count = self._counts.get((endpoint, kind), (index, 0))
            windows.append((kind, index, 0 if seen != index else count, limit, length))
        waits = [
            (i + 1) * length - elapsed for _, i, count, limit, length in windows if count >= limit
        ]
        if waits:
            return max(waits), {}
        for kind, index, count, _, _ in windows:
            self._counts[(endpoint, kind)] = (index, count + 1)
        _, index, count, limit, length = windows[1]
        return None, {
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(max(limit - count - 1, 0)),
            "RateLimit-Reset": str(math.ceil((index + 1) * length - elapsed)),
        }


class FakeServer:
    """The HTTP server thread plus the request pipeline; FakeKlaviyo is its façade."""

    def __init__(
        self,
        state: FakeState,
        *,
        latency: float,
        rate_limits: bool | RateLimits,
        time_scale: float,
        retired: Iterable[str] | None = None,
        scopes: Iterable[str] | None = None,
    ) -> None:
        self._state = state
        self._latency = latency
        self._scopes = None if scopes is None else frozenset(scopes)
        overrides = dict(rate_limits) if isinstance(rate_limits, Mapping) else {}
        # Each revision's published limits, with the test's overrides on top.
        self._limits = {
            name: {**published_rate_limits(name), **overrides} for name in SUPPORTED_REVISIONS
        }
        self._enforce = bool(rate_limits)
        self._windows = RateWindows(self._limits[DEFAULT_REVISION], time_scale)
        self._retired = _retired_today() if retired is None else frozenset(retired)
        unknown = self._retired - set(SUPPORTED_REVISIONS)
        if unknown:
            raise ValueError(
                f"retired: {', '.join(sorted(unknown))} not served by FakeKlaviyo; it serves "
                f"{', '.join(SUPPORTED_REVISIONS)}"
            )
        live = [name for name in SUPPORTED_REVISIONS if name not in self._retired]
        if not live:
            raise ValueError("retired: at least one revision must stay supported")
        self.served_as = live[0]
        self._faults: deque[_Fault] = deque()
        self._drops = 0
        self._lock = threading.Lock()
        self.throttled = 0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``; only valid while started."""
        if self._httpd is None:
            raise RuntimeError(
                "FakeKlaviyo is not running: call start() or use it as a context manager."
            )
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        """Bind a free port on 127.0.0.1 and serve from a daemon thread."""
        if self._httpd is not None:
            return
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.app = self
        with self._lock:
            self._windows.restart()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="FakeKlaviyo",
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the listening socket and open connections, join the thread."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        thread.join()
        self._httpd = self._thread = None

    def fail_next(
        self,
        status: int,
        times: int,
        retry_after: float | None,
        body: JSON | bytes,
        *,
        content_type: str = _JSON_API,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Queue ``times`` injected failures; a ``bytes`` body is sent as it is."""
        fault = _Fault(status, retry_after, body, content_type, dict(headers or {}))
        with self._lock:
            self._faults.extend(fault for _ in range(times))

    def drop_next_connection(self) -> None:
        """Close the next request's connection without answering."""
        with self._lock:
            self._drops += 1

    def reset(self) -> None:
        """Forget queued faults and drops."""
        with self._lock:
            self._faults.clear()
            self._drops = 0
            self.throttled = 0

    def handle(
        self, method: str, raw_path: str, headers: Mapping[str, str], raw: bytes
    ) -> Response | None:
        """Answer one request; None means: drop the connection."""
        if self._latency:
            time.sleep(self._latency)
        key = _key_of(headers.get("authorization", ""))
        body = _scrub(_parse(raw), key)
        recorded = _scrub((raw_path, _mask(headers), None if body is _MALFORMED else body), key)
        with self._state.transaction() as index:
            response = self._respond(method, raw_path, headers, body, index)
            status = None if response is None else response.status
            self._state.add_request(
                FakeRequest(method, recorded[0], recorded[1], recorded[2], status)
            )
        return response

    def _respond(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: JSON, index: int
    ) -> Response | None:
        with self._lock:
            if self._drops:
                self._drops -= 1
                return None
            fault = self._faults.popleft() if self._faults else None
        path, _, query = raw_path.partition("?")
        path = path.rstrip("/")
        polled = _JOB_PATH.match(path)
        endpoint = f"POST {path}"
        if polled is not None:
            endpoint = _IMPORT_ERRORS if polled.group(2) else _JOB_STATUS
        if fault is not None:
            return self._fault_response(fault, endpoint)
        route = _ROUTES.get(path)
        if route is None and polled is None:
            detail = f"The path {path or '/'} could not be found."
            return _error(404, detail, code="not_found", title="Not found.")
        if method != ("GET" if polled is not None else "POST"):
            detail = f'Method "{method}" not allowed.'
            return _error(405, detail, code="method_not_allowed", title="Method not allowed.")
        refusal = _credentials(path, headers, query) or self._scope_refusal(path, endpoint)
        if refusal is not None:
            return refusal
        under = self._revision(headers)
        if isinstance(under, Response):
            return under
        with self._lock:
            wait, rate_headers = self._windows.take(endpoint, self._limits[under.name])
            if wait is not None and self._enforce:
                self.throttled += 1
                return _throttled(wait)
        if polled is not None:
            response = _poll(self._state, polled.group(1), endpoint, query)
        elif body is _MALFORMED:
            response = _error(
                400,
                "JSON parse error - the request body is not valid JSON.",
                code="parse_error",
                title="Malformed request.",
            )
        else:
            now = dt.datetime.now(dt.timezone.utc)
            response = cast(_Route, route)(self._state, body, index, now, under)
        return attrs.evolve(response, headers={**rate_headers, **response.headers})

    def _scope_refusal(self, path: str, endpoint: str) -> Response | None:
        """Answer 403 naming the scopes the key lacks for ``endpoint``, as Klaviyo does."""
        if self._scopes is None or path.startswith("/client/"):
            return None
        missing = [scope for scope in required_scopes(endpoint) if scope not in self._scopes]
        if not missing:
            return None
        detail = f"This API key is missing required scopes: {', '.join(missing)}."
        return _error(
            403,
            detail,
            code="permission_denied",
            title="You do not have permission to perform this action.",
            source_pointer="/data/",
        )

    def _revision(self, headers: Mapping[str, str]) -> Revision | Response:
        """The revision a request is served under: its own, or a retired one's successor."""
        name = headers.get("revision")
        if not name:
            detail = (
                f"The 'revision' header is required, for example 'revision: {DEFAULT_REVISION}'."
            )
            return _error(400, detail, parameter="revision")
        if name not in SUPPORTED_REVISIONS:
            detail = (
                f"Invalid revision '{name}'. FakeKlaviyo serves {', '.join(SUPPORTED_REVISIONS)}."
            )
            return _error(400, detail, parameter="revision")
        if name not in self._retired:
            return revision(name)
        if headers.get(FALL_FORWARD_OPT_OUT.lower()) == "1":
            detail = f"Revision {name} has been retired; use a supported revision."
            return _error(410, detail, code="gone", title="Gone.")
        return revision(self.served_as)

    def _fault_response(self, fault: _Fault, endpoint: str) -> Response:
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        if fault.status != 429:
            with self._lock:
                headers.update(self._windows.take(endpoint)[1])
        headers.update(fault.headers)
        if isinstance(fault.body, bytes):
            response = Response(fault.status, raw=fault.body)
        elif fault.body is not None:
            response = Response(fault.status, fault.body)
        elif fault.status == 429:
            wait = math.ceil(fault.retry_after or 0)
            detail = f"Request was throttled. Expected available in {wait} seconds."
            response = Response(429, schema.real_error_body(429, detail))
        elif fault.status == 401:
            response = Response(401, schema.real_error_body(401))
        else:
            code, title, detail = _FAULT_TEXT.get(fault.status, _SERVER_ERROR)
            response = _error(fault.status, detail, code=code, title=title)
        return attrs.evolve(response, headers=headers, content_type=fault.content_type)


def _throttled(wait: float) -> Response:
    seconds = math.ceil(wait)
    detail = f"Request was throttled. Expected available in {seconds} seconds."
    headers = {
        "Retry-After": str(seconds),
        "X-Fake-Retry-After": f"{math.ceil(wait * 1000) / 1000:.3f}",
    }
    return Response(429, schema.real_error_body(429, detail), headers)


def _error(status: int, detail: str, **fields: Any) -> Response:
    record = schema.error_record(status, detail, **fields)
    return Response(status, {"errors": [record]})


def _bad(errors: list[dict[str, JSON]]) -> Response:
    return Response(400, {"errors": errors})


_MALFORMED: Any = object()


def _parse(raw: bytes) -> JSON:
    try:
        return json.loads(raw) if raw else _MALFORMED
    except ValueError:
        return _MALFORMED


def _credentials(path: str, headers: Mapping[str, str], query: str) -> Response | None:
    """Refuse a request without the credentials its endpoint takes, as Klaviyo would."""
    if not path.startswith("/client/"):
        if _key_of(headers.get("authorization", "")) is None:
            return Response(401, schema.real_error_body(401))
        return None
    if not parse_qs(query).get("company_id"):
        detail = "The 'company_id' query parameter (your public API key) is required."
        return _error(400, detail, parameter="company_id")
    if "authorization" in headers:
        # Klaviyo's client-side endpoints are for browsers: a private key sent to one is a
        # leaked key. The fake refuses, so a test catches it.
        detail = "Client-side endpoints take no Authorization header; never send a private key."
        return _error(400, detail, parameter="Authorization")
    return None


def _key_of(authorization: str) -> str | None:
    match = _AUTH.match(authorization)
    return match.group(1) if match else None


def _mask(headers: Mapping[str, str]) -> dict[str, str]:
    masked = {name.lower(): value for name, value in headers.items()}
    if "authorization" in masked:
        scheme, _, key = masked["authorization"].partition(" ")
        masked["authorization"] = f"{scheme} {'pk_***' if key.startswith('pk_') else '***'}"
    return masked


def _scrub(value: Any, key: str | None) -> Any:
    # The key could also be echoed in a body or a path by a confused caller; never keep it.
    if key is None or len(key) < 4:
        return value
    if isinstance(value, str):
        return value.replace(key, "pk_***")
    if isinstance(value, dict):
        return {_scrub(k, key): _scrub(v, key) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v, key) for v in value)
    return value


# --- the endpoints ---------------------------------------------------------------------------

_Route = Callable[[FakeState, JSON, int, dt.datetime, Revision], Response]


def _profile_errors(
    state: FakeState,
    profile: Mapping[str, JSON],
    missing_at: list[str | int],
    id_at: list[str | int],
) -> list[JSON]:
    """Check that a profile object names someone: an identifier, or the id of a known profile."""
    if not schema.has_identifier(profile):
        return [schema.identifier_error(missing_at)]
    wanted = profile.get("id")
    if wanted and not state.knows_profile_id(wanted):
        detail = f"A profile with id '{wanted}' does not exist."
        return [schema.error_record(400, detail, source_pointer=schema.pointer(id_at))]
    return []


def _event_fields(attributes: Mapping[str, JSON]) -> dict[str, JSON]:
    return {k: v for k, v in attributes.items() if k != "profile"}


def _create_event(
    state: FakeState, body: JSON, index: int, now: dt.datetime, under: Revision
) -> Response:
    errors = schema.schema_errors("event_create", body, under)
    if errors:
        return _bad(errors)
    attributes = body["data"]["attributes"]
    profile = attributes["profile"]["data"]
    at: list[str | int] = ["data", "attributes", "profile"]
    errors = _profile_errors(state, profile, at, [*at, "data", "id"])
    errors += schema.event_limit_errors(attributes, ["data", "attributes"], now, under)
    if errors:
        return _bad(errors)
    profile_id, _ = state.upsert(profile)
    state.record_event(profile_id, _event_fields(attributes), index, now)
    return Response(202)


def _bulk_create_events(
    state: FakeState, body: JSON, index: int, now: dt.datetime, under: Revision
) -> Response:
    errors = schema.schema_errors("event_bulk_create_job", body, under)
    if errors:
        return _bad(errors)
    items = body["data"]["attributes"]["events-bulk-create"]["data"]
    for i, item in enumerate(items):
        at: list[str | int] = ["data", "attributes", "events-bulk-create", "data", i, "attributes"]
        profile = item["attributes"]["profile"]["data"]
        errors += _profile_errors(state, profile, [*at, "profile"], [*at, "profile", "data", "id"])
        for j, event in enumerate(item["attributes"]["events"]["data"]):
            where = [*at, "events", "data", j, "attributes"]
            errors += schema.event_limit_errors(event["attributes"], where, now, under)
    if not errors and under.unique_id_repeat_fails_job:
        errors = _repeated_unique_ids(items)
    if errors:
        return _bad(errors)
    for item in items:
        profile_id, _ = state.upsert(item["attributes"]["profile"]["data"])
        for event in item["attributes"]["events"]["data"]:
            fields = _event_fields(event["attributes"])
            if item["attributes"].get("backfill"):
                fields.setdefault("backfill", True)
            state.record_event(profile_id, fields, index, now)
    job = {
        "type": "event-bulk-create-job",
        "id": uuid.uuid4().hex,
        "attributes": {
            "status": "queued",
            "created_at": now.isoformat(),
            "total_count": len(items),
        },
    }
    return Response(202, {"data": job})


def _repeated_unique_ids(items: list[JSON]) -> list[JSON]:
    """Since 2025-01-15 a job with one unique_id twice for a profile and metric fails whole."""
    seen: set[tuple[object, ...]] = set()
    for i, item in enumerate(items):
        attributes = item["attributes"]["profile"]["data"].get("attributes") or {}
        who = tuple(str(attributes.get(k) or "").lower() for k in schema.IDENTIFIERS)
        for j, event in enumerate(item["attributes"]["events"]["data"]):
            fields = event["attributes"]
            unique_id = fields.get("unique_id")
            if unique_id is None:
                continue
            key = (who, fields["metric"]["data"]["attributes"]["name"], unique_id)
            if key in seen:
                where: list[str | int] = [
                    "data",
                    "attributes",
                    "events-bulk-create",
                    "data",
                    i,
                    "attributes",
                ]
                detail = (
                    f"The unique_id '{unique_id}' is repeated for the same profile and metric; "
                    "no events were processed."
                )
                at = schema.pointer([*where, "events", "data", j, "attributes", "unique_id"])
                return [schema.error_record(400, detail, source_pointer=at)]
            seen.add(key)
    return []


def _profile_body_errors(
    state: FakeState, body: JSON, operation: str, under: Revision
) -> list[JSON]:
    """Check a single-profile body: the revision's schema, its declared fields, a person."""
    errors = schema.schema_errors(operation, body, under)
    if not errors:
        attributes = body["data"].get("attributes") or {}
        at: list[str | int] = ["data", "attributes"]
        errors = schema.unknown_field_errors(operation, attributes, at, under)
    return errors or _profile_errors(state, body["data"], ["data", "attributes"], ["data", "id"])


def _import_profile(
    state: FakeState, body: JSON, index: int, now: dt.datetime, under: Revision
) -> Response:
    errors = _profile_body_errors(state, body, "profile_import", under)
    if not errors:
        errors = _value_errors(body["data"].get("attributes") or {}, ["data", "attributes"])
    if errors:
        return _bad(errors)
    profile_id, created = state.upsert(body["data"])
    profile = state.profile(profile_id)
    attributes = {
        "email": profile.email,
        "phone_number": profile.phone_number,
        "external_id": profile.external_id,
        "anonymous_id": profile.anonymous_ids[-1] if profile.anonymous_ids else None,
        **profile.attributes,
        "properties": profile.properties,
    }
    data = {
        "type": "profile",
        "id": profile_id,
        "attributes": attributes,
        "links": {"self": f"https://a.klaviyo.com/api/profiles/{profile_id}/"},
    }
    return Response(201 if created else 200, {"data": data})


def _value_errors(attributes: Mapping[str, JSON], at: list[str | int]) -> list[JSON]:
    return [
        schema.error_record(400, detail, source_pointer=schema.pointer([*at, field]))
        for field, detail in schema.profile_value_errors(attributes)
    ]


def _bulk_import_profiles(
    state: FakeState, body: JSON, index: int, now: dt.datetime, under: Revision
) -> Response:
    """Queue a bulk profile import job: checked whole now, imported profile by profile later.

    A body the schema refuses, an entry without an identifier, with a field the revision
    does not declare or over 100 KB, or a job over 10,000 profiles or 5 MB is refused whole
    (400 or 413). A profile whose email or phone number Klaviyo would refuse becomes an
    import error of the job, listed once the job is complete; the others are merged.
    """
    under = schema.schema_revision(PROFILE_JOBS_OPERATION, under)
    if not under.has(PROFILE_JOBS_OPERATION):
        detail = (
            f"FakeKlaviyo holds no schema of /api/profile-bulk-import-jobs for revision "
            f"{under.name}."
        )
        return _error(400, detail, parameter="revision")
    errors = schema.schema_errors(PROFILE_JOBS_OPERATION, body, under)
    if errors:
        return _bad(errors)
    size = len(json.dumps(body, separators=(",", ":")).encode("utf-8"))
    if size > _MAX_IMPORT_BYTES:
        detail = f"The payload is {size} bytes; the maximum allowed payload size is 5MB."
        return _error(413, detail, code="too_large", title="Request entity too large.")
    profiles = body["data"]["attributes"]["profiles"]["data"]
    where: list[str | int] = ["data", "attributes", "profiles", "data"]
    if len(profiles) > _MAX_IMPORT_PROFILES:
        detail = f"A job accepts up to 10,000 profiles; this one has {len(profiles)}."
        return _bad([schema.error_record(400, detail, source_pointer=schema.pointer(where))])
    declared = under.schema(PROFILE_JOBS_OPERATION)["properties"]["data"]["properties"]
    items = declared["attributes"]["properties"]["profiles"]["properties"]["data"]["items"]
    known = items["properties"]["attributes"]["properties"]
    for i, profile in enumerate(profiles):
        at: list[str | int] = [*where, i]
        attributes = profile.get("attributes") or {}
        for name in attributes:
            if name not in known:
                detail = f"'{name}' is not a valid field for the resource 'profile'."
                at_name = schema.pointer([*at, "attributes", name])
                errors.append(schema.error_record(400, detail, source_pointer=at_name))
        if not schema.has_identifier(profile):
            errors.append(schema.identifier_error([*at, "attributes"]))
        if len(json.dumps(profile).encode("utf-8")) > _MAX_IMPORT_PROFILE_BYTES:
            detail = "The maximum allowed payload size per-profile is 100KB."
            errors.append(schema.error_record(400, detail, source_pointer=schema.pointer(at)))
    if errors:
        return _bad(errors)
    job = state.add_import_job(profiles, index, now, state.import_delay)
    return Response(202, {"data": job})


def _poll(state: FakeState, job_id: str, endpoint: str, query: str) -> Response:
    """Answer a GET of an import job, or of a page of its import errors."""
    job = state.import_job(job_id)
    if job is None:
        detail = f"A profile bulk import job with id '{job_id}' does not exist."
        return _error(404, detail, code="not_found", title="Not found.")
    if endpoint == _JOB_STATUS:
        return Response(200, {"data": job.document()})
    params = parse_qs(query)
    try:
        size = int((params.get("page[size]") or ["20"])[0])
        start = int((params.get("page[cursor]") or ["0"])[0])
    except ValueError:
        return _error(400, "Invalid page parameter.", parameter="page")
    if not 1 <= size <= 100 or start < 0:
        return _error(400, "page[size] must be between 1 and 100.", parameter="page[size]")
    errors = job.errors if job.status == "complete" else []
    base = f"https://a.klaviyo.com/api/profile-bulk-import-jobs/{job_id}/import-errors"
    following = None
    if start + size < len(errors):
        following = f"{base}?page%5Bcursor%5D={start + size}&page%5Bsize%5D={size}"
    links = {"self": base, "next": following, "prev": None}
    return Response(200, {"data": errors[start : start + size], "links": links})


def _create_client_profile(
    state: FakeState, body: JSON, index: int, now: dt.datetime, under: Revision
) -> Response:
    if not under.has("client_profile_create"):
        detail = f"FakeKlaviyo holds no schema of /client/profiles for revision {under.name}."
        return _error(400, detail, parameter="revision")
    errors = _profile_body_errors(state, body, "client_profile_create", under)
    if errors:
        return _bad(errors)
    # Klaviyo: a client-side endpoint may add identifiers a profile lacks, never change one.
    state.upsert(body["data"], keep_identifiers=True)
    return Response(202)


def _subscription_route(operation: str, consent: str, *, member: bool) -> _Route:
    def route(
        state: FakeState, body: JSON, index: int, now: dt.datetime, under: Revision
    ) -> Response:
        errors = schema.schema_errors(operation, body, under)
        if errors:
            return _bad(errors)
        attributes = body["data"]["attributes"]
        profiles = attributes["profiles"]["data"]
        errors = schema.subscription_attribute_errors(profiles)
        for i, profile in enumerate(profiles):
            at: list[str | int] = ["data", "attributes", "profiles", "data", i]
            if profile.get("id"):
                errors += _profile_errors(state, profile, at, [*at, "id"])
        if errors:
            return _bad(errors)
        list_id = (
            ((body["data"].get("relationships") or {}).get("list") or {}).get("data") or {}
        ).get("id")
        extra = (
            {"custom_source": attributes["custom_source"]}
            if attributes.get("custom_source")
            else {}
        )
        for profile in profiles:
            profile_id, _ = state.upsert(profile)
            fields = profile["attributes"]
            channels = fields.get("subscriptions") or _default_channels(fields, consent)
            state.set_consent(profile_id, channels, extra)
            if list_id:
                state.set_list(profile_id, list_id, member=member)
        return Response(202)

    return route


def _default_channels(fields: Mapping[str, JSON], consent: str) -> dict[str, JSON]:
    # Klaviyo: without `subscriptions`, every message type of each channel the profile's
    # identifiers allow is (un)subscribed.
    channels: dict[str, JSON] = {}
    if fields.get("email"):
        channels["email"] = {"marketing": {"consent": consent}}
    if fields.get("phone_number"):
        channels["sms"] = {"marketing": {"consent": consent}, "transactional": {"consent": consent}}
    return channels


_ROUTES: dict[str, _Route] = {
    "/api/events": _create_event,
    "/api/event-bulk-create-jobs": _bulk_create_events,
    "/api/profile-import": _import_profile,
    "/client/profiles": _create_client_profile,
    "/api/profile-bulk-import-jobs": _bulk_import_profiles,
    "/api/profile-subscription-bulk-create-jobs": _subscription_route(
        "subscription_bulk_create_job", "SUBSCRIBED", member=True
    ),
    "/api/profile-subscription-bulk-delete-jobs": _subscription_route(
        "subscription_bulk_delete_job", "UNSUBSCRIBED", member=False
    ),
}


# --- the socket side -------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    app: FakeServer

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        # Kept-alive connections would otherwise outlive stop() in their handler threads.
        with self._open_lock:
            for sock in self._open:
                with contextlib.suppress(OSError):  # the peer may have closed it already
                    sock.shutdown(socket.SHUT_RDWR)
            self._open.clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK hold every answer with a body back by ~40 ms.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        response = self.server.app.handle(self.command, self.path, headers, raw)
        if response is None:
            self.close_connection = True
            return
        payload = response.raw
        if payload is None:
            payload = b"" if response.body is None else json.dumps(response.body).encode("utf-8")
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Request-Id", uuid.uuid4().hex)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: request lines would clutter the user's test output."""


# --- the in-process side ---------------------------------------------------------------------


class InProcessTransport:
    """A ``klaviyo_signal.typing.Transport`` that hands each request to the fake directly.

    The same pipeline as a request over the socket (``FakeServer.handle``), without one:
    no port, no thread per connection. It does not retry (the requests transport's urllib3
    retries are not on this path; the background worker's own retries are).
    """

    def __init__(self, server: FakeServer) -> None:
        self._server = server

    def __repr__(self) -> str:
        return "<FakeKlaviyo in-process transport>"

    def handle(self, request: HTTPRequest) -> HTTPResponse:
        """Answer ``request`` as the fake's HTTP server would."""
        parts = urlsplit(request.url)
        raw_path = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {name.lower(): value for name, value in request.headers.items()}
        response = self._server.handle(request.method, raw_path, headers, request.body)
        if response is None:
            raise NetworkError(f"FakeKlaviyo dropped the connection ({parts.path})")
        payload = response.raw
        if payload is None:
            payload = b"" if response.body is None else json.dumps(response.body).encode("utf-8")
        answer_headers = {
            "Content-Type": response.content_type,
            "Content-Length": str(len(payload)),
            "X-Request-Id": uuid.uuid4().hex,
            **response.headers,
        }
        return HTTPResponse(response.status, answer_headers, payload)

    def close(self) -> None:
        """Nothing to release."""
