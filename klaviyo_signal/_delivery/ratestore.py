"""One rate-limit budget shared by every process that names the same ``rate_limit_store``.

Klaviyo counts its limits per account, so eight gunicorn workers that each pace
themselves as if alone spend eight times the budget and draw 429s. With a store, each
endpoint's sliding log (see ``ratelimit``) lives in Redis or in one SQLite file instead,
keyed by the account's public key and the endpoint, and a request starts only when the
store grants it a slot:

- a slot is taken atomically (a Lua script in Redis, a ``BEGIN IMMEDIATE`` transaction in
  SQLite), so two processes never both take the last one;
- a taken slot counts as in flight (its score is the end of a lease) until the request
  completes; it is then logged at its completion time, the latest moment Klaviyo can have
  received it, exactly as the in-process log does. A process that dies mid-request leaves a
  slot that ages out once its lease ends;
- a 429's pause (``Retry-After``) and Klaviyo's ``RateLimit-Remaining``/``RateLimit-Reset``
  are written to the store too, so a throttle one process sees pauses them all.

Every limiter also keeps its own in-process log. If the store does not answer, the client
logs one WARNING, paces by that log alone and keeps sending; it asks the store again every
``_RETRY_AFTER`` seconds. Redis times come from its ``TIME`` (one clock for hosts whose
clocks differ); SQLite, used on one host, takes the host's wall clock.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from .._errors import ConfigurationError
from .ratelimit import BURST_SPAN, STEADY_SPAN, EndpointLimiter, budget_of

if TYPE_CHECKING:
    import redis

__all__ = [
    "STORE_SCHEMES",
    "RateStore",
    "SharedLimiter",
    "check_store_url",
    "open_rate_store",
    "shown_url",
]

log = logging.getLogger("klaviyo_signal")

STORE_SCHEMES = ("redis", "rediss", "unix", "sqlite")
# Seconds between attempts to reach a store that did not answer.
_RETRY_AFTER = 10.0
# Redis: the longest a store call may hold the worker thread (connect, then answer).
_REDIS_TIMEOUT = 1.0
# SQLite: how long a transaction waits for another process's write lock.
_SQLITE_BUSY_TIMEOUT = 5.0
# A slot held in flight decides a wait: ask again this soon (it frees when a request ends).
_IN_FLIGHT_POLL = 0.05
_KEY_PREFIX = "klaviyo-signal:rate"

Windows = Sequence[tuple[float, int]]
"""(span in seconds, requests allowed in any such span) per window."""


class RateStore:
    """A store of shared sliding logs: what the Redis and SQLite stores have in common.

    Every public method returns quietly when the store does not answer (logged once per
    outage); the limiter then paces by its own log. Used by one worker thread per client.

    Args:
        shown: The store as logs name it (no password).
        account: The account's public key: every key of this client starts with it.
        errors: The backend's exceptions that mean "did not answer".
    """

    def __init__(self, shown: str, account: str, errors: tuple[type[BaseException], ...]) -> None:
        self.shown = shown
        self._account = account
        self._errors = errors
        self._retry_at = -math.inf
        self._down = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.shown}>"

    def key(self, endpoint: str) -> str:
        """Return the store key of one endpoint's budget in this account."""
        # The braces are a Redis Cluster hash tag: an endpoint's keys share one slot.
        return f"{_KEY_PREFIX}:{{{self._account} {endpoint}}}"

    def limiter(
        self,
        endpoint: str,
        burst: int | None,
        steady: int | None,
        *,
        lease: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> SharedLimiter:
        """Return a limiter for ``endpoint`` that paces against this store's budget."""
        return SharedLimiter(
            burst, steady, store=self, key=self.key(endpoint), lease=lease, clock=clock
        )

    def acquire(self, key: str, windows: Windows, lease: float) -> tuple[str | None, float] | None:
        """Take a slot now if every window has room: (token, 0.0), else (None, seconds to wait).

        Returns None when the store did not answer (pace alone).
        """
        granted: tuple[str | None, float] | None = self._guarded(self._acquire, key, windows, lease)
        return granted

    def complete(self, key: str, token: str | None, budget: tuple[float, float] | None) -> None:
        """Log the slot ``token`` as completed now, and store Klaviyo's (remaining, reset)."""
        if token is not None or budget is not None:
            self._guarded(self._complete, key, token, budget)

    def pause(self, key: str, seconds: float) -> None:
        """Pause the endpoint for every process for ``seconds`` (a 429's Retry-After)."""
        self._guarded(self._pause, key, seconds)

    def close(self) -> None:
        """Release the connection (a later call opens a new one)."""

    # -- what a backend provides -------------------------------------------------------

    def _acquire(self, key: str, windows: Windows, lease: float) -> tuple[str | None, float]:
        raise NotImplementedError

    def _complete(self, key: str, token: str | None, budget: tuple[float, float] | None) -> None:
        raise NotImplementedError

    def _pause(self, key: str, seconds: float) -> None:
        raise NotImplementedError

    # -- outages -----------------------------------------------------------------------

    def _guarded(self, call: Callable[..., Any], *args: Any) -> Any:
        if time.monotonic() < self._retry_at:
            return None
        try:
            result = call(*args)
        except self._errors as exc:
            self._retry_at = time.monotonic() + _RETRY_AFTER
            if not self._down:
                self._down = True
                log.warning(
                    "klaviyo-signal: rate_limit_store %s did not answer (%s: %s); each process "
                    "now paces itself alone and keeps sending, and asks the store again every "
                    "%g s",
                    self.shown,
                    type(exc).__name__,
                    exc,
                    _RETRY_AFTER,
                )
            self.close()
            return None
        if self._down:
            self._down = False
            log.info("klaviyo-signal: rate_limit_store %s answers again", self.shown)
        return result


class SharedLimiter(EndpointLimiter):
    """An endpoint's limiter that takes each request's slot from a shared store.

    Its own (in-process) log keeps counting too: it paces alone while the store is out.
    Like ``EndpointLimiter``, owned by one worker thread.

    Args:
        burst: Requests allowed in any burst span; None: no limit.
        steady: Requests allowed in any steady span; None: no limit.
        store: Where the budget is shared.
        key: This endpoint's key in the store.
        lease: Seconds a slot counts as in flight at most (longer than any request lasts).
        clock: Monotonic seconds for the in-process log.
        spans: The window lengths (1 s and 60 s, as Klaviyo counts).
    """

    def __init__(
        self,
        burst: int | None,
        steady: int | None,
        *,
        store: RateStore,
        key: str,
        lease: float,
        clock: Callable[[], float] = time.monotonic,
        spans: tuple[float, float] = (BURST_SPAN, STEADY_SPAN),
    ) -> None:
        super().__init__(burst, steady, clock=clock, spans=spans)
        self._store = store
        self._key = key
        self._lease = lease
        # A slot the store granted to a delay() whose request has not begun yet: the
        # worker may pick another endpoint's request first, and then uses it next.
        self._held: str | None = None
        self._tokens: deque[str | None] = deque()  # one per request in flight, oldest first
        self._answered_429 = False

    def delay(self) -> float:
        """Return the seconds to wait before the next request may start; 0 takes its slot."""
        wait = super().delay()
        if wait > 0 or self._held is not None:
            return wait
        granted = self._store.acquire(self._key, self._windows, self._lease)
        if granted is None:
            return 0.0  # the store is out: this process's own log allowed it
        token, wait = granted
        if token is None:
            return max(wait, 0.001)
        self._held = token
        return 0.0

    def begin(self) -> None:
        super().begin()
        self._tokens.append(self._held)
        self._held = None

    def end(self, headers: Mapping[str, str] | None = None, *, throttled: bool = False) -> None:
        super().end(headers, throttled=throttled)
        token = self._tokens.popleft() if self._tokens else None
        self._answered_429 = throttled
        self._store.complete(self._key, token, budget_of(headers) if headers else None)

    def throttle(self, retry_after: float | None) -> float:
        pause = super().throttle(retry_after)
        # Only Klaviyo's 429 speaks for the account; a retry's backoff after a 5xx or a
        # lost answer stays this process's own.
        if self._answered_429:
            self._store.pause(self._key, pause)
        return pause


# -- Redis ---------------------------------------------------------------------------------

# KEYS[1]: the log, a sorted set of slot tokens scored by completion time (while in
# flight: the end of their lease). KEYS[2]: a hash of paused (until), remaining and
# budget_until (Klaviyo's RateLimit-* answer), seq (the last token).
# ARGV: lease, the in-flight poll, then (span, limit) per window.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease, poll = tonumber(ARGV[1]), tonumber(ARGV[2])
local keep = 0
for i = 3, #ARGV, 2 do keep = math.max(keep, tonumber(ARGV[i])) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('(%.6f', now - keep))
local state = redis.call('HMGET', KEYS[2], 'paused', 'remaining', 'budget_until')
local wait = 0
local paused = tonumber(state[1])
if paused and paused > now then wait = paused - now end
local remaining, budget_until = tonumber(state[2]), tonumber(state[3])
local budgeted = budget_until and remaining and budget_until > now
if budgeted and remaining <= 0 then wait = math.max(wait, budget_until - now) end
for i = 3, #ARGV, 2 do
  local span, limit = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local since = string.format('(%.6f', now - span)
  local n = redis.call('ZCOUNT', KEYS[1], since, '+inf')
  if n >= limit then
    -- The slot that must age out before one more fits; one still in flight frees when
    -- its request completes, so ask again soon.
    local first = redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES',
      'LIMIT', n - limit, 1)
    local at = tonumber(first[2])
    if at > now then wait = math.max(wait, poll)
    else wait = math.max(wait, at + span - now) end
  end
end
if wait > 0 then return {0, string.format('%.6f', wait)} end
local token = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('ZADD', KEYS[1], now + lease, token)
if budgeted then redis.call('HINCRBYFLOAT', KEYS[2], 'remaining', -1) end
local ttl = math.ceil((keep + lease) * 1000)
redis.call('PEXPIRE', KEYS[1], ttl)
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return {token, '0'}
"""

# ARGV: token ('' for none), remaining, reset ('' for none), ttl in ms.
_COMPLETE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[4])
if ARGV[1] ~= '' then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
end
if ARGV[2] ~= '' then
  local reset = tonumber(ARGV[3])
  redis.call('HSET', KEYS[2], 'remaining', ARGV[2],
    'budget_until', string.format('%.6f', now + reset))
  ttl = math.max(ttl, math.ceil(reset * 1000))
  if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
end
return 1
"""

# ARGV: the pause in seconds.
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local pause = tonumber(ARGV[1])
local old = tonumber(redis.call('HGET', KEYS[2], 'paused') or '0')
if now + pause > old then
  redis.call('HSET', KEYS[2], 'paused', string.format('%.6f', now + pause))
end
local ttl = math.ceil(pause * 1000) + 1000
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
"""


class RedisStore(RateStore):
    """The budget in Redis: three Lua scripts, each one atomic step (EVALSHA, then EVAL
    once if the server's script cache lost them)."""

    def __init__(self, url: str, account: str) -> None:
        try:
            # An optional extra, imported only when a Redis store is asked for.
            import redis as redis_module  # noqa: PLC0415
            from redis.backoff import NoBackoff  # noqa: PLC0415
            from redis.retry import Retry  # noqa: PLC0415
        except ImportError:
            raise ConfigurationError(
                f"rate_limit_store: {shown_url(url)} needs the redis package: "
                "pip install 'klaviyo-signal[redis]'"
            ) from None
        try:
            # No retries inside redis-py: an outage is the fallback's business, and the
            # worker thread must not stall in backoff.
            client = redis_module.Redis.from_url(
                url,
                socket_timeout=_REDIS_TIMEOUT,
                socket_connect_timeout=_REDIS_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise ConfigurationError(
                f"rate_limit_store: {shown_url(url)} is not a Redis URL this client can use ({exc})"
            ) from None
        super().__init__(shown_url(url), account, (redis_module.RedisError, OSError))
        self._client: redis.Redis = client
        self._acquire_script = client.register_script(_ACQUIRE)
        self._complete_script = client.register_script(_COMPLETE)
        self._pause_script = client.register_script(_PAUSE)

    def _acquire(self, key: str, windows: Windows, lease: float) -> tuple[str | None, float]:
        args: list[float] = [lease, _IN_FLIGHT_POLL]
        for span, limit in windows:
            args += [span, limit]
        token, wait = self._acquire_script(keys=_keys(key), args=args)
        if int(token) == 0:
            return None, float(wait)
        return str(int(token)), 0.0

    def _complete(self, key: str, token: str | None, budget: tuple[float, float] | None) -> None:
        remaining, reset = ("", "") if budget is None else (f"{budget[0]:g}", f"{budget[1]:.6f}")
        ttl = math.ceil(STEADY_SPAN * 2 * 1000)
        self._complete_script(keys=_keys(key), args=[token or "", remaining, reset, ttl])

    def _pause(self, key: str, seconds: float) -> None:
        self._pause_script(keys=_keys(key), args=[f"{seconds:.6f}"])

    def close(self) -> None:
        self._client.connection_pool.disconnect()


def _keys(key: str) -> list[str]:
    return [f"{key}:log", f"{key}:state"]


# -- SQLite --------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS klaviyo_rate_log (
    token INTEGER PRIMARY KEY, key TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS klaviyo_rate_log_key_at ON klaviyo_rate_log (key, at);
CREATE TABLE IF NOT EXISTS klaviyo_rate_state (
    key TEXT PRIMARY KEY, paused REAL NOT NULL DEFAULT 0,
    remaining REAL, budget_until REAL NOT NULL DEFAULT 0);
"""


class SQLiteStore(RateStore):
    """The budget in one SQLite file (WAL mode) for the processes of one host.

    Each step is one ``BEGIN IMMEDIATE`` transaction: it takes the write lock before it
    reads, so no other process can change the log between the count and the insert.
    """

    def __init__(self, url: str, path: str, account: str) -> None:
        super().__init__(url, account, (sqlite3.Error, OSError))
        self._path = path
        self._lock = threading.Lock()
        self._lock_pid = os.getpid()
        self._db: sqlite3.Connection | None = None
        self._pid = 0
        try:
            self._connection()
        except (sqlite3.Error, OSError) as exc:
            raise ConfigurationError(
                f"rate_limit_store: cannot use {url} as a SQLite rate-limit store: {exc}"
            ) from None
        finally:
            self.close()  # the worker thread opens its own when it first sends

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross fork(): a child opens its own.
        if self._db is None or self._pid != os.getpid():
            db = sqlite3.connect(
                self._path,
                timeout=_SQLITE_BUSY_TIMEOUT,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                db.execute("PRAGMA journal_mode=WAL")
                # The log is worth nothing after a power cut: skip the fsyncs.
                db.execute("PRAGMA synchronous=OFF")
                db.executescript(_SCHEMA)
            except BaseException:
                db.close()
                raise
            self._db, self._pid = db, os.getpid()
        return self._db

    def _guard(self) -> threading.Lock:
        # A lock held by a thread of the parent at fork() would stay held in the child.
        if self._lock_pid != os.getpid():
            self._lock, self._lock_pid = threading.Lock(), os.getpid()
        return self._lock

    def _transaction(self, step: Callable[[sqlite3.Connection, float], Any]) -> Any:
        with self._guard():
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                result = step(db, time.time())
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

    def _acquire(self, key: str, windows: Windows, lease: float) -> tuple[str | None, float]:
        def step(db: sqlite3.Connection, now: float) -> tuple[str | None, float]:
            keep = max((span for span, _ in windows), default=0.0)
            db.execute("DELETE FROM klaviyo_rate_log WHERE key = ? AND at < ?", (key, now - keep))
            row = db.execute(
                "SELECT paused, remaining, budget_until FROM klaviyo_rate_state WHERE key = ?",
                (key,),
            ).fetchone()
            paused, remaining, budget_until = row if row is not None else (0.0, None, 0.0)
            wait = max(paused - now, 0.0)
            budgeted = remaining is not None and budget_until > now
            if remaining is not None and budgeted and remaining <= 0:
                wait = max(wait, budget_until - now)
            for span, limit in windows:
                since = now - span
                (n,) = db.execute(
                    "SELECT count(*) FROM klaviyo_rate_log WHERE key = ? AND at > ?", (key, since)
                ).fetchone()
                if n >= limit:
                    (at,) = db.execute(
                        "SELECT at FROM klaviyo_rate_log WHERE key = ? AND at > ? ORDER BY at "
                        "LIMIT 1 OFFSET ?",
                        (key, since, n - limit),
                    ).fetchone()
                    wait = max(wait, _IN_FLIGHT_POLL if at > now else at + span - now)
            if wait > 0:
                return None, wait
            cursor = db.execute(
                "INSERT INTO klaviyo_rate_log (key, at) VALUES (?, ?)", (key, now + lease)
            )
            if budgeted:
                db.execute(
                    "UPDATE klaviyo_rate_state SET remaining = remaining - 1 WHERE key = ?", (key,)
                )
            return str(cursor.lastrowid), 0.0

        result: tuple[str | None, float] = self._transaction(step)
        return result

    def _complete(self, key: str, token: str | None, budget: tuple[float, float] | None) -> None:
        def step(db: sqlite3.Connection, now: float) -> None:
            if token is not None:
                db.execute("UPDATE klaviyo_rate_log SET at = ? WHERE token = ?", (now, int(token)))
            if budget is not None:
                remaining, reset = budget
                db.execute(
                    "INSERT INTO klaviyo_rate_state (key, remaining, budget_until) VALUES (?, ?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET remaining = excluded.remaining,"
                    " budget_until = excluded.budget_until",
                    (key, remaining, now + reset),
                )

        self._transaction(step)

    def _pause(self, key: str, seconds: float) -> None:
        def step(db: sqlite3.Connection, now: float) -> None:
            db.execute(
                "INSERT INTO klaviyo_rate_state (key, paused) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET paused = max(paused, excluded.paused)",
                (key, now + seconds),
            )

        self._transaction(step)

    def close(self) -> None:
        with self._guard():
            db, self._db = self._db, None
            if db is not None and self._pid == os.getpid():
                db.close()


# -- choosing one --------------------------------------------------------------------------


def check_store_url(url: object) -> None:
    """Raise ConfigurationError unless ``url`` names a store this client knows."""
    if url is None:
        return
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in STORE_SCHEMES:
        raise ConfigurationError(
            f"rate_limit_store: {shown_url(url)} is not a store URL: use "
            "'redis://host:6379/0' (also rediss:// or unix://) or 'sqlite:///path/to/file.db'"
        )
    if parts.scheme == "sqlite" and (parts.netloc or not _sqlite_path(str(url))):
        raise ConfigurationError(
            f"rate_limit_store: {shown_url(url)}: a SQLite store is 'sqlite:///relative.db' "
            "or 'sqlite:////absolute/path.db' (three slashes, then the file's path)"
        )


def open_rate_store(url: str, account: str) -> RateStore:
    """Return the store ``url`` names, for the account with public key ``account``.

    Nothing is sent to a Redis server yet; a SQLite file is opened (and created) once to
    check it.

    Raises:
        ConfigurationError: The URL is not a store's, the redis package is missing, or the
            SQLite file cannot be used.
    """
    check_store_url(url)
    if url.startswith("sqlite:"):
        return SQLiteStore(shown_url(url), _sqlite_path(url), account)
    return RedisStore(url, account)


def _sqlite_path(url: str) -> str:
    # sqlite:///rel.db -> "rel.db"; sqlite:////abs.db -> "/abs.db" (SQLAlchemy's form).
    return unquote(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else ""


def shown_url(url: object) -> str:
    """The URL for messages and logs, its password masked."""
    if not isinstance(url, str):
        return repr(url)
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return repr(url)
    if password:
        netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
        url = parts._replace(netloc=netloc).geturl()
    # redis-py also takes the password as a query argument (``?password=...``).
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "password" for name, _ in query):
        shown = [(name, "***" if name == "password" else value) for name, value in query]
        url = urlsplit(url)._replace(query=urlencode(shown, safe="*")).geturl()
    return repr(url)
