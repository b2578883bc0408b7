"""A bounded local HTTP sink that answers like Klaviyo, Segment, PostHog and RudderStack.

Run as ``python bench/sink.py --mode klaviyo``: it binds 127.0.0.1 on a free port, prints
``PORT <n>`` on stdout, and stops by itself after ``--max-requests`` requests or
``--lifetime`` seconds, whichever comes first (or on ``POST /_shutdown``).

It parses every body (gzip too) and counts the events in it: one per ``/api/events``
request, every event of every item of a Klaviyo bulk job, every message of a Segment,
Rudder or PostHog batch. The harness reads the counters from ``GET /_stats`` and waits for
a count with ``GET /_wait?events=N&timeout=S``: the answer carries the ``time.monotonic()``
at which the sink had counted the N-th event (CLOCK_MONOTONIC is shared by every process
on the machine, so the worker can subtract its own start time).

Modes:
    klaviyo   202 for /api/events and /api/event-bulk-create-jobs, 201 for /api/profile-import,
              202 for /api/profile-bulk-import-jobs (a queued job), and 200 for GET
              /api/profile-bulk-import-jobs/{id} (the job, complete, nothing failed)
    segment   200 for /v1/batch
    rudder    200 for /v1/batch
    posthog   200 for /batch/
    hold      reads requests and never answers (pauses a sender until the sink stops)
    limited   klaviyo, plus Klaviyo's burst/steady limits in fixed windows, time-scaled by
              ``--scale`` (a 1-second window lasts 1/scale s): over the limit it answers 429
              with Retry-After and RateLimit-* headers, as Klaviyo does.

Only the standard library is used, so the sink's own cost is the same for every client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import math
import random
import sys
import time
import zlib
from urllib.parse import parse_qs, urlsplit

# Klaviyo's published limits (shared/klaviyo-api/rate_limits.json): (burst per 1 s, steady per 60 s)
KLAVIYO_LIMITS = {
    "/api/events": (350, 3500),
    "/api/event-bulk-create-jobs": (10, 150),
    "/api/profile-import": (75, 700),
    "/api/profile-bulk-import-jobs": (10, 150),
    "/api/profile-bulk-import-jobs/{id}": (10, 150),
    "/api/profile-bulk-import-jobs/{id}/import-errors": (10, 150),
}
PROFILE_JOBS = "/api/profile-bulk-import-jobs"
ROUTES = {
    "klaviyo": {
        "/api/events": 202,
        "/api/event-bulk-create-jobs": 202,
        "/api/profile-import": 201,
        "/api/profile-bulk-import-jobs": 202,
        "/api/profile-bulk-import-jobs/{id}": 200,
        "/api/profile-bulk-import-jobs/{id}/import-errors": 200,
    },
    "segment": {"/v1/batch": 200},
    "rudder": {"/v1/batch": 200},
    "posthog": {"/batch/": 200, "/batch": 200},
}
ROUTES["limited"] = ROUTES["klaviyo"]


THROTTLED = {
    "errors": [
        {
            "id": "00000000-0000-0000-0000-000000000000",
            "status": 429,
            "code": "throttled",
            "title": "Request was throttled.",
            "detail": "Request was throttled. Expected available in 1 second.",
            "source": {"pointer": "/data/"},
        }
    ]
}


def route_of(path: str) -> str:
    """The route a path is served by: a bulk import job's id stands as ``{id}``."""
    if path.startswith(PROFILE_JOBS + "/"):
        rest = path[len(PROFILE_JOBS) + 1 :]
        return f"{PROFILE_JOBS}/{{id}}" + (
            "/import-errors" if rest.endswith("/import-errors") else ""
        )
    return path


def job_body(job_id: str, status: str, total: int) -> bytes:
    """A profile bulk import job as Klaviyo's JSON:API answers it."""
    done = status == "complete"
    attributes = {
        "status": status,
        "total_count": total,
        "completed_count": total if done else 0,
        "failed_count": 0,
    }
    data = {"type": "profile-bulk-import-job", "id": job_id, "attributes": attributes}
    return json.dumps({"data": data}).encode()


def count_events(path: str, body: object) -> tuple[int, int]:
    """Return (events, profiles) carried by one accepted request body."""
    if not isinstance(body, dict):
        return 0, 0
    if path == "/api/events":
        return 1, 0
    if path == "/api/profile-import":
        return 0, 1
    if path == PROFILE_JOBS:
        return 0, len(body["data"]["attributes"]["profiles"]["data"])
    if path == "/api/event-bulk-create-jobs":
        items = body["data"]["attributes"]["events-bulk-create"]["data"]
        return sum(len(item["attributes"]["events"]["data"]) for item in items), len(items)
    batch = body.get("batch")
    return (len(batch), 0) if isinstance(batch, list) else (0, 0)


def unique_keys(path: str, body: object) -> tuple[list[str], list[str]]:
    """Return the events' unique_ids and the profiles' identifiers in an accepted body
    (``--count-unique``: how many distinct events and profiles arrived, resends apart)."""
    if not isinstance(body, dict):
        return [], []
    data = body.get("data")
    attributes = data.get("attributes", {}) if isinstance(data, dict) else {}
    if path == "/api/events":
        return [str(attributes.get("unique_id"))], []
    if path == "/api/event-bulk-create-jobs":
        items = attributes["events-bulk-create"]["data"]
        ids = [
            str(event["attributes"].get("unique_id"))
            for item in items
            for event in item["attributes"]["events"]["data"]
        ]
        return ids, [_profile_key(item["attributes"]["profile"]["data"]) for item in items]
    if path == "/api/profile-import":
        return [], [_profile_key(data)]
    if path == "/api/profile-bulk-import-jobs":
        profiles = attributes["profiles"]["data"]
        return [], [_profile_key(profile) for profile in profiles]
    return [], []


def _profile_key(profile: dict[str, object]) -> str:
    attributes = profile.get("attributes", {})
    assert isinstance(attributes, dict)
    for name in ("external_id", "email", "phone_number", "anonymous_id"):
        if attributes.get(name):
            return f"{name}:{attributes[name]}"
    return "?"


class Windows:
    """Klaviyo-style fixed windows (1 s and 60 s, divided by ``scale``) for one endpoint."""

    def __init__(self, burst: int, steady: int, scale: float, epoch: float) -> None:
        self.burst, self.steady = burst, steady
        self.short, self.long = 1.0 / scale, 60.0 / scale
        self.epoch = epoch
        self.counts: dict[tuple[str, int], int] = {}

    def admit(self, now: float) -> tuple[bool, float, int, float]:
        """Count a request at ``now``.

        Returns (allowed, seconds until it may retry, remaining, seconds until the window
        that leaves the fewest remaining resets), all in the sink's scaled time.
        """
        s = int((now - self.epoch) // self.short)
        m = int((now - self.epoch) // self.long)
        in_s = self.counts.get(("s", s), 0)
        in_m = self.counts.get(("m", m), 0)
        reset_s = self.epoch + (s + 1) * self.short - now
        reset_m = self.epoch + (m + 1) * self.long - now
        if in_s < self.burst and in_m < self.steady:
            self.counts["s", s] = in_s + 1
            self.counts["m", m] = in_m + 1
            left_s, left_m = self.burst - in_s - 1, self.steady - in_m - 1
            if left_m < left_s:
                return True, 0.0, left_m, reset_m
            return True, 0.0, left_s, reset_s
        if in_m >= self.steady:
            return False, reset_m, 0, reset_m
        return False, reset_s, 0, reset_s


class Sink:
    def __init__(self, args: argparse.Namespace) -> None:
        self.mode = args.mode
        self.max_requests = args.max_requests
        self.lifetime = args.lifetime
        self.started = time.monotonic()
        # Klaviyo's window edges are invisible to a client: give them a random phase.
        epoch = self.started - random.random() * 60.0 / args.scale
        self.epoch, self.scale = epoch, args.scale
        self.windows = {
            path: Windows(burst, steady, args.scale, epoch)
            for path, (burst, steady) in KLAVIYO_LIMITS.items()
        }
        self.requests = 0
        self.events = 0
        self.profiles = 0
        self.bytes = 0
        self.by_status: dict[str, int] = {}
        self.by_path: dict[str, int] = {}
        self.throttled = 0
        self.bad = 0
        self.first_request: float | None = None
        self.last_accept: float | None = None
        # (monotonic, events, path) per accepted request
        self.accepted: list[tuple[float, int, str]] = []
        self.waiters: list[tuple[int, asyncio.Future[float]]] = []
        self.reached: dict[int, float] = {}
        self.stop = asyncio.Event()
        self.writers: set[asyncio.StreamWriter] = set()
        self.jobs: dict[str, int] = {}  # profile import job id -> profiles
        self.count_unique = args.count_unique
        self.unique_events: set[str] = set()
        self.event_profiles: set[str] = set()
        self.imported_profiles: set[str] = set()

    # -- bookkeeping -------------------------------------------------------------------

    def _counted(self, now: float, events: int, path: str) -> None:
        before = self.events
        self.events += events
        self.last_accept = now
        self.accepted.append((now, events, path))
        for target, future in list(self.waiters):
            if before < target <= self.events and not future.done():
                future.set_result(now)
                self.waiters.remove((target, future))

    def stats(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "requests": self.requests,
            "events": self.events,
            "profiles": self.profiles,
            "bytes": self.bytes,
            "by_status": self.by_status,
            "by_path": self.by_path,
            "throttled": self.throttled,
            "bad": self.bad,
            "first_request": self.first_request,
            "last_accept": self.last_accept,
            "accepted": self.accepted if self.mode == "limited" else [],
            "uptime": time.monotonic() - self.started,
            "epoch": self.epoch,
            "scale": self.scale,
            "unique_events": len(self.unique_events),
            "event_profiles": len(self.event_profiles),
            "imported_profiles": len(self.imported_profiles),
        }

    # -- HTTP --------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while not self.stop.is_set():
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = await _read_chunked(reader)
                else:
                    body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, out, extra = await self.respond(method, target, headers, body)
                if status is None:  # hold mode: never answer
                    await self.stop.wait()
                    return
                reason = {
                    200: "OK",
                    201: "Created",
                    202: "Accepted",
                    404: "Not Found",
                    400: "Bad Request",
                    429: "Too Many Requests",
                }.get(status, "OK")
                header_lines = [
                    f"HTTP/1.1 {status} {reason}",
                    f"Content-Length: {len(out)}",
                    "Content-Type: application/json",
                    *(f"{k}: {v}" for k, v in extra.items()),
                ]
                if headers.get("connection", "").lower() == "close":
                    header_lines.append("Connection: close")
                writer.write(("\r\n".join(header_lines) + "\r\n\r\n").encode() + out)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.writers.discard(writer)
            writer.close()

    async def respond(
        self, method: str, target: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int | None, bytes, dict[str, str]]:
        url = urlsplit(target)
        path = url.path
        if path == "/_stats":
            return 200, json.dumps(self.stats()).encode(), {}
        if path == "/_wait":
            query = parse_qs(url.query)
            target_events = int(query["events"][0])
            timeout = float(query.get("timeout", ["60"])[0])
            if self.events >= target_events:
                at = self.last_accept
            else:
                future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
                self.waiters.append((target_events, future))
                try:
                    at = await asyncio.wait_for(future, timeout)
                except asyncio.TimeoutError:
                    at = None
            return 200, json.dumps({"at": at, "events": self.events}).encode(), {}
        if path == "/_shutdown":
            self.stop.set()
            return 200, b"{}", {}

        now = time.monotonic()
        self.requests += 1
        self.bytes += len(raw)
        if self.first_request is None:
            self.first_request = now
        if self.requests >= self.max_requests:
            self.stop.set()
        if self.mode == "hold":
            return None, b"", {}
        route = route_of(path)
        status = ROUTES[self.mode].get(route)
        self.by_path[route] = self.by_path.get(route, 0) + 1
        if status is None or method != ("GET" if route != path else "POST"):
            return self._status(404, b'{"errors": [{"status": 404, "code": "not_found"}]}', {})
        extra: dict[str, str] = {}
        if self.mode == "limited" and route in self.windows:
            ok, wait, remaining, reset = self.windows[route].admit(now)
            burst, steady = KLAVIYO_LIMITS[route]
            if not ok:
                self.throttled += 1
                retry = max(1, math.ceil(wait))
                return self._status(
                    429,
                    json.dumps(THROTTLED).encode(),
                    {
                        "Retry-After": str(retry),
                        "RateLimit-Limit": f"{burst}, {burst};w=1, {steady};w=60",
                        "RateLimit-Remaining": "0",
                        "RateLimit-Reset": _seconds(reset, self.scale),
                    },
                )
            extra = {
                "RateLimit-Limit": f"{burst}, {burst};w=1, {steady};w=60",
                "RateLimit-Remaining": str(remaining),
                "RateLimit-Reset": _seconds(reset, self.scale),
            }
        if route != path:  # polling a job: it was imported at once, nothing failed
            job_id = path[len(PROFILE_JOBS) + 1 :].split("/")[0]
            if route.endswith("/import-errors"):
                return self._status(200, b'{"data": [], "links": {"next": null}}', extra)
            body = job_body(job_id, "complete", self.jobs.get(job_id, 0))
            return self._status(200, body, extra)
        try:
            data = raw
            encoding = headers.get("content-encoding", "").lower()
            if encoding == "gzip":
                data = gzip.decompress(data)
            elif encoding == "deflate":
                data = zlib.decompress(data)
            body = json.loads(data) if data else None
            events, profiles = count_events(path, body)
        except (ValueError, KeyError, TypeError, OSError, zlib.error):
            self.bad += 1
            return self._status(400, b'{"errors": [{"status": 400, "code": "invalid"}]}', {})
        self.profiles += profiles
        if self.count_unique:
            with contextlib.suppress(KeyError, TypeError, AttributeError, AssertionError):
                ids, people = unique_keys(path, body)
                self.unique_events.update(ids)
                seen = self.imported_profiles if "profile" in path else self.event_profiles
                seen.update(people)
        if path == PROFILE_JOBS:
            # Counted in profiles: ``accepted`` holds (time, profiles, path) for these.
            self.last_accept = now
            self.accepted.append((now, profiles, path))
            job_id = f"JOB{len(self.jobs):08d}"
            self.jobs[job_id] = profiles
            return self._status(status, job_body(job_id, "queued", profiles), extra)
        self._counted(now, events, path)
        if path == "/api/profile-import":
            return self._status(status, b'{"data": {"type": "profile", "id": "01BENCH"}}', extra)
        if self.mode in ("segment", "rudder"):
            return self._status(status, b'{"success": true}', extra)
        if self.mode == "posthog":
            return self._status(status, b'{"status": 1}', extra)
        return self._status(status, b"", extra)

    def _status(
        self, status: int, body: bytes, extra: dict[str, str]
    ) -> tuple[int, bytes, dict[str, str]]:
        self.by_status[str(status)] = self.by_status.get(str(status), 0) + 1
        return status, body, extra


def _seconds(value: float, scale: float) -> str:
    """``RateLimit-Reset``: whole seconds (rounded up) as Klaviyo sends them; at a time scale
    other than 1 a Klaviyo second is a fraction of one, so the value keeps 3 decimals."""
    if scale == 1.0:
        return str(max(1, math.ceil(value)))
    return f"{max(value, 0.001):.3f}"


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def main(args: argparse.Namespace) -> None:
    sink = Sink(args)
    server = await asyncio.start_server(
        sink.handle, "127.0.0.1", args.port, limit=64 * 1024 * 1024, backlog=512
    )
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(sink.stop.wait(), args.lifetime)
    server.close()
    for writer in list(sink.writers):
        writer.close()
    for _, future in sink.waiters:
        if not future.done():
            future.cancel()
    if args.stats_out:
        with open(args.stats_out, "w") as fh:
            json.dump(sink.stats(), fh)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=[*ROUTES, "hold"], default="klaviyo")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--max-requests", type=int, default=200_000)
    p.add_argument("--lifetime", type=float, default=120.0)
    p.add_argument("--scale", type=float, default=1.0, help="limited mode: time scale")
    p.add_argument("--stats-out", help="write the final counters here as JSON on exit")
    p.add_argument(
        "--count-unique",
        action="store_true",
        help="count distinct event unique_ids and profiles (resends counted once)",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse(sys.argv[1:])))
