"""HTTP: one requests Session with urllib3 retries, and the one place errors are translated.

Retrying POST is safe because every event carries ``unique_id`` and profile-import is an
upsert. ``raise_on_status=False`` hands the last answer back so we raise our own typed
errors; no ``requests``/``urllib3`` exception reaches users.

Only Klaviyo's documented answer counts as success: redirects are not followed (requests
would turn a POST into a GET on 301-303, and nothing would reach Klaviyo), and a 3xx, an
undocumented 2xx or a 2xx body that is not Klaviyo's JSON raises ``UnexpectedResponseError``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import attrs
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    InvalidHeader,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.util import Retry

from .._errors import (
    APIError,
    BlockedByEdgeError,
    ErrorRecord,
    NetworkError,
    RequestTimeoutError,
    TransportError,
    UnexpectedResponseError,
    api_error_for,
)
from .._version import VERSION
from .json import JSON
from .operations import required_scopes, success_statuses
from .revisions import DEFAULT_REVISION, FALL_FORWARD_OPT_OUT, revision

__all__ = ["SERVER_ERROR_STATUSES", "Answer", "Transport", "make_retry"]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# The background worker retries only these itself-transparently: it handles 429 endpoint-wide
# in its rate limiter, which a per-request urllib3 retry would bypass.
SERVER_ERROR_STATUSES = frozenset({500, 502, 503, 504})
CONNECT_TIMEOUT = 3.05
# The media types Klaviyo's JSON bodies come with (JSON:API, or plain JSON from its gateway).
_JSON_TYPES = ("application/vnd.api+json", "application/json")


class _RetryWithout429(Retry):
    """A Retry that leaves every 429 to the caller.

    urllib3 retries a 429 that carries ``Retry-After`` even when 429 is not in
    ``status_forcelist``; the background worker pauses the whole endpoint instead.
    """

    RETRY_AFTER_STATUS_CODES = Retry.RETRY_AFTER_STATUS_CODES - {429}


def make_retry(max_retries: int, statuses: frozenset[int] = RETRY_STATUSES) -> Retry:
    """Return the retry policy: 429 and 5xx, POST included, Retry-After honoured, jittered.

    Args:
        max_retries: Retries per kind (connect, read, status), and in total.
        statuses: The answers that are retried (default: 429 and 5xx).
    """
    retry_class = Retry if 429 in statuses else _RetryWithout429
    return retry_class(
        total=max_retries,
        connect=max_retries,
        read=max_retries,
        status=max_retries,
        other=0,
        status_forcelist=statuses,
        allowed_methods=frozenset({"POST", "GET"}),
        respect_retry_after_header=True,
        backoff_factor=0.5,
        backoff_max=30.0,
        backoff_jitter=0.5,
        raise_on_status=False,
        raise_on_redirect=False,
    )


@attrs.frozen
class Answer:
    """A successful answer from Klaviyo."""

    status: int
    headers: Mapping[str, str]
    body: JSON
    retries: int
    sent_bytes: int


def _records(payload: object) -> tuple[ErrorRecord, ...]:
    errors = payload.get("errors") if isinstance(payload, dict) else None
    if not isinstance(errors, list):
        return ()
    records = []
    for err in errors:
        if not isinstance(err, dict):
            continue
        source = err.get("source")
        pointer = (
            source.get("pointer") or source.get("parameter") if isinstance(source, dict) else None
        )
        records.append(
            ErrorRecord(
                code=err.get("code"),
                title=err.get("title"),
                detail=err.get("detail"),
                pointer=pointer,
            )
        )
    return tuple(records)


def _retry_after(value: str | None) -> float | None:
    """Read ``Retry-After`` (seconds, possibly fractional, or an HTTP-date); None if unusable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = float(Retry.parse_retry_after(Retry(), value))
        except InvalidHeader:
            return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _parse(response: requests.Response) -> JSON:
    if not response.content:
        return None
    try:
        parsed: JSON = json.loads(response.content)
    except ValueError:
        return None
    return parsed


def _is_error_document(payload: JSON) -> bool:
    """Whether ``payload`` is a JSON:API errors document, as Klaviyo's API sends with a 4xx."""
    return isinstance(payload, dict) and isinstance(payload.get("errors"), list)


def _not_klaviyo(endpoint: str, response: requests.Response, payload: JSON) -> str | None:
    """Say why a sub-400 answer is not Klaviyo's documented success, or None when it is.

    Klaviyo answers 202 with an empty body (events, subscriptions) or a JSON:API document
    (bulk jobs), and 200/201 with the profile (profile-import); the statuses per endpoint
    are in ``_schemas/rate_limits.json``.
    """
    status = response.status_code
    expected = success_statuses(endpoint)
    kind = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    foreign = bool(response.content) and (kind not in _JSON_TYPES or not isinstance(payload, dict))
    body = f" with a {kind or 'untyped'} body" if foreign else ""
    if 300 <= status < 400:
        return f"{body}: a redirect, not followed (Klaviyo's API answers {endpoint} without one)"
    if status not in expected:
        wanted = " or ".join(str(code) for code in sorted(expected))
        return f"{body}, which Klaviyo does not send for {endpoint} (it answers {wanted})"
    if foreign:
        return f"{body} that is not Klaviyo's JSON"
    if not response.content and status != 202:
        return f" with an empty body, where Klaviyo sends JSON for {endpoint}"
    return None


class Transport:
    """Sends request bodies to Klaviyo and returns an ``Answer`` or raises a typed error."""

    def __init__(
        self,
        *,
        base_url: str,
        public_api_key: str,
        private_api_key: str,
        revision: str,
        strict_revision: bool = False,
        timeout: float,
        max_retries: int,
        pool_size: int = 4,
        retry_statuses: frozenset[int] = RETRY_STATUSES,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._public_api_key = public_api_key
        self._revision = revision
        self._timeout = (min(CONNECT_TIMEOUT, timeout), timeout)
        self._session = requests.Session()
        adapter = HTTPAdapter(
            max_retries=make_retry(max_retries, retry_statuses),
            pool_connections=1,
            pool_maxsize=pool_size,
        )
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._session.headers.update(
            {
                "Authorization": f"Klaviyo-API-Key {private_api_key}",
                "revision": revision,
                "Accept": "application/vnd.api+json",
                "Content-Type": "application/vnd.api+json",
                "User-Agent": f"klaviyo-signal/{VERSION}",
            }
        )
        if strict_revision:
            self._session.headers[FALL_FORWARD_OPT_OUT] = "1"
        # Read the environment (HTTPS_PROXY/NO_PROXY, REQUESTS_CA_BUNDLE) once, for the one
        # host this session talks to. requests otherwise reads it again on every request
        # (a fifth of a sync call's time), and could swap the Authorization header for a
        # ~/.netrc entry.
        found = self._session.merge_environment_settings(self._base_url, {}, None, None, None)
        self._session.proxies = found["proxies"]
        self._session.verify = found["verify"]
        self._session.cert = found["cert"]
        self._session.trust_env = False

    def __repr__(self) -> str:
        return f"<Transport {self._base_url}>"

    def post(self, path: str, body: bytes, *, timeout: float | None = None) -> Answer:
        """POST a JSON body; raise ``APIError``/``TransportError`` when it does not succeed.

        Args:
            path: The endpoint path, e.g. ``/api/events``.
            body: The encoded JSON.
            timeout: A shorter read timeout for this request (the worker's shutdown deadline).
        """
        return self._send("POST", path, body, timeout, f"POST {path}")

    def get(self, path: str, *, endpoint: str, timeout: float | None = None) -> Answer:
        """GET a resource; raise ``APIError``/``TransportError`` as ``post`` does.

        Args:
            path: The path with its query, e.g. ``/api/profile-bulk-import-jobs/01H``.
            endpoint: The operation it is, e.g. ``GET /api/profile-bulk-import-jobs/{id}``
                (its documented answers and scopes).
            timeout: A shorter read timeout for this request.
        """
        return self._send("GET", path, None, timeout, endpoint)

    def _send(
        self, method: str, path: str, body: bytes | None, timeout: float | None, endpoint: str
    ) -> Answer:
        limit = self._timeout
        if timeout is not None and timeout < limit[1]:
            limit = (min(limit[0], timeout), timeout)
        url, headers = self._base_url + path, None
        if path.startswith("/client/"):
            # Klaviyo's client-side endpoints take the public key, and a private key must
            # never travel to them: requests drops a session header set to None.
            url += f"?company_id={self._public_api_key}"
            headers = _PUBLIC_ONLY
        error: TransportError | None = None
        try:
            response = self._session.request(
                method, url, data=body, timeout=limit, headers=headers, allow_redirects=False
            )
        except requests.exceptions.RequestException as exc:
            error = self._translate(exc, path)
        if error is not None:
            # Raised outside the except block, so neither __cause__ nor __context__ links
            # the requests/urllib3 exceptions: their tracebacks' frames hold the request
            # headers (the private key), which error reporters capture with the chain.
            raise error
        history = getattr(getattr(response.raw, "retries", None), "history", ())
        payload = _parse(response)
        if response.status_code >= 400:
            raise self._refusal(response, payload, endpoint)
        problem = _not_klaviyo(endpoint, response, payload)
        if problem is not None:
            raise UnexpectedResponseError(
                response.status_code,
                problem,
                request_id=_request_id(response),
                headers=dict(response.headers),
                scopes=required_scopes(endpoint),
            )
        return Answer(
            status=response.status_code,
            headers=dict(response.headers),
            body=payload,
            retries=len(history),
            sent_bytes=len(body or b""),
        )

    def _refusal(self, response: requests.Response, payload: JSON, endpoint: str) -> APIError:
        """Return the typed error for a 4xx/5xx answer."""
        cls = api_error_for(response.status_code)
        # A 403 that is not Klaviyo's JSON:API errors document (or carries Cloudflare's
        # challenge header) never reached the API, so the key's scopes are not the problem.
        if response.status_code == 403 and (
            "cf-mitigated" in response.headers or not _is_error_document(payload)
        ):
            cls = BlockedByEdgeError
        return cls(
            response.status_code,
            _records(payload),
            request_id=_request_id(response),
            headers=dict(response.headers),
            retry_after=_retry_after(response.headers.get("Retry-After")),
            scopes=required_scopes(endpoint),
            advice=_gone(self._revision) if response.status_code == 410 else None,
        )

    def _translate(self, exc: requests.exceptions.RequestException, path: str) -> TransportError:
        """The one place a requests error becomes ours."""
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        # With urllib3 retries on, a read timeout arrives as a ConnectionError around a
        # MaxRetryError whose reason is the timeout: Klaviyo was reached, it was slow.
        # urllib3's NewConnectionError (refused, DNS) subclasses ConnectTimeoutError.
        timed_out = isinstance(reason, (ReadTimeoutError, ConnectTimeoutError))
        if isinstance(exc, requests.exceptions.Timeout) or (
            timed_out and not isinstance(reason, NewConnectionError)
        ):
            return RequestTimeoutError(
                f"Klaviyo did not answer {path} within {self._timeout[1]} s (after retries); "
                "raise timeout= or check the network."
            )
        if isinstance(exc, requests.exceptions.RetryError):
            return NetworkError(f"retries to Klaviyo {path} ran out: {_safe(exc)}")
        if isinstance(exc, requests.exceptions.ConnectionError):
            return NetworkError(
                f"could not reach Klaviyo at {self._base_url} ({path}): {_safe(exc)}"
            )
        return TransportError(f"request to Klaviyo {path} failed: {_safe(exc)}")

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()


_PUBLIC_ONLY: Mapping[str, str | None] = {"Authorization": None}


def _gone(name: str) -> str:
    """What a 410 means: the same words as the RevisionWarning at construction."""
    status = revision(name).status()
    if status.state == "retired":
        return status.describe(name).capitalize() + "."
    return (
        f"Klaviyo treats revision {name} as retired; pass revision={DEFAULT_REVISION!r} "
        "(the newest this package supports)."
    )


def _request_id(response: requests.Response) -> str | None:
    return response.headers.get("X-Request-Id") or response.headers.get("x-klaviyo-request-id")


def _safe(exc: BaseException) -> str:
    """Describe a requests error by its class; its text can hold URLs, never keys, but be brief."""
    reason = exc.args[0] if exc.args else exc
    inner = getattr(reason, "reason", None)
    return type(inner or reason).__name__ if inner or reason else type(exc).__name__
