"""HTTP, in two layers: a ``Transport`` moves bytes; ``KlaviyoAPI`` speaks Klaviyo.

``Transport`` is the seam (as httpx's ``transport=``): one method that sends an
``HTTPRequest`` and returns an ``HTTPResponse``, or raises ``TransportError`` when no answer
came. The default, ``RequestsTransport``, is one requests Session with urllib3 retries
(retrying POST is safe because every event carries ``unique_id`` and profile-import is an
upsert; ``raise_on_status=False`` hands the last answer back). ``FakeKlaviyo.transport()``
answers in-process, and ``explain`` stops at the request ``KlaviyoAPI.build`` makes.

``KlaviyoAPI`` builds each request (key, revision, headers) and is the one place an answer
becomes an ``Answer`` or a typed error; no ``requests``/``urllib3`` exception reaches users.

Only Klaviyo's documented answer counts as success: redirects are not followed (requests
would turn a POST into a GET on 301-303, and nothing would reach Klaviyo), and a 3xx, an
undocumented 2xx or a 2xx body that is not Klaviyo's JSON raises ``UnexpectedResponseError``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import urlsplit

import attrs
import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
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

__all__ = [
    "SERVER_ERROR_STATUSES",
    "Answer",
    "HTTPRequest",
    "HTTPResponse",
    "KlaviyoAPI",
    "RequestsTransport",
    "Transport",
    "make_retry",
    "masked",
]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# The server errors the background worker retries itself (``_delivery/dispatch`` says why).
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


def _parse(response: HTTPResponse) -> JSON:
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


def _not_klaviyo(endpoint: str, response: HTTPResponse, payload: JSON) -> str | None:
    """Say why a sub-400 answer is not Klaviyo's documented success, or None when it is.

    Klaviyo answers 202 with an empty body (events, subscriptions) or a JSON:API document
    (bulk jobs), and 200/201 with the profile (profile-import); the statuses per endpoint
    are in ``_schemas/rate_limits.json``.
    """
    status = response.status
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


_MASKED_AUTHORIZATION = "Klaviyo-API-Key pk_***"


def masked(headers: Mapping[str, str]) -> dict[str, str]:
    """Return ``headers`` with the private key hidden, as reprs, logs and ``explain`` show them."""
    return {
        name: _MASKED_AUTHORIZATION if name.lower() == "authorization" else value
        for name, value in headers.items()
    }


@attrs.frozen
class HTTPRequest:
    """One request as it goes on the wire: what a ``Transport`` sends."""

    method: str
    url: str
    """The whole URL, query included."""
    headers: Mapping[str, str] = attrs.field(repr=lambda headers: repr(masked(headers)))
    """Every header, the ``Authorization`` with the private key included (where it goes)."""
    body: bytes
    timeout: tuple[float, float]
    """Seconds to connect, and to wait for the answer."""


def _case_insensitive(headers: Mapping[str, str]) -> Mapping[str, str]:
    return CaseInsensitiveDict(headers)


@attrs.frozen
class HTTPResponse:
    """What came back: the status, the headers (case-insensitive), the body's bytes."""

    status: int
    headers: Mapping[str, str] = attrs.field(converter=_case_insensitive)
    content: bytes = b""
    retries: int = 0
    """How many times the transport sent the request again before this answer."""


class Transport(Protocol):
    """Sends one request and returns its answer: the seam to swap the HTTP stack.

    Raise ``TransportError`` (``NetworkError``, ``RequestTimeoutError``) when no answer
    came; every answer, a 4xx or a 5xx too, is returned, and ``KlaviyoAPI`` reads it. The
    background worker retries 429s, 5xx and unanswered requests itself, paced by its rate
    limiter, so a transport given to a Client should not retry them.
    """

    def handle(self, request: HTTPRequest) -> HTTPResponse:
        """Send ``request``; return the answer or raise ``TransportError``."""

    def close(self) -> None:
        """Release connections; called when the Client closes."""


class RequestsTransport:
    """The default ``Transport``: a requests Session with urllib3 retries and a pool.

    Args:
        max_retries: urllib3 retries of connection errors, 5xx and (when in
            ``retry_statuses``) 429, Retry-After honoured; 0 for none.
        pool_size: Connections kept open.
        retry_statuses: The answers retried.
    """

    def __init__(
        self,
        *,
        max_retries: int = 0,
        pool_size: int = 4,
        retry_statuses: frozenset[int] = RETRY_STATUSES,
    ) -> None:
        self._session = requests.Session()
        adapter = HTTPAdapter(
            max_retries=make_retry(max_retries, retry_statuses),
            pool_connections=1,
            pool_maxsize=pool_size,
        )
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._session.trust_env = False
        self._environment: dict[str, dict[str, object]] = {}

    def __repr__(self) -> str:
        return "<RequestsTransport>"

    def _settings(self, url: str) -> dict[str, object]:
        """The environment's proxies and CA bundle for ``url``'s host, read once per host.

        requests otherwise reads them again on every request (a fifth of a sync call's
        time), and could swap the Authorization header for a ~/.netrc entry.
        """
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        found = self._environment.get(origin)
        if found is None:
            with requests.Session() as probe:
                settings = probe.merge_environment_settings(origin, {}, None, None, None)
            found = self._environment[origin] = dict(settings)
        return found

    def handle(self, request: HTTPRequest) -> HTTPResponse:
        """POST (or GET) through the session; requests' errors become ``TransportError``."""
        settings = self._settings(request.url)
        error: TransportError | None = None
        try:
            response = self._session.request(
                request.method,
                request.url,
                data=request.body or None,
                headers=request.headers,
                timeout=request.timeout,
                allow_redirects=False,
                proxies=settings["proxies"],  # type: ignore[arg-type]
                verify=settings["verify"],  # type: ignore[arg-type]
                cert=settings["cert"],  # type: ignore[arg-type]
            )
        except requests.exceptions.RequestException as exc:
            error = _translate(exc, request)
        if error is not None:
            # Raised outside the except block, so neither __cause__ nor __context__ links
            # the requests/urllib3 exceptions: their tracebacks' frames hold the request
            # headers (the private key), which error reporters capture with the chain.
            raise error
        history = getattr(getattr(response.raw, "retries", None), "history", ())
        return HTTPResponse(
            response.status_code, dict(response.headers), response.content, retries=len(history)
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()


def _translate(exc: requests.exceptions.RequestException, request: HTTPRequest) -> TransportError:
    """The one place a requests error becomes ours."""
    parts = urlsplit(request.url)
    path, base_url = parts.path, f"{parts.scheme}://{parts.netloc}"
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    # With urllib3 retries on, a read timeout arrives as a ConnectionError around a
    # MaxRetryError whose reason is the timeout: Klaviyo was reached, it was slow.
    # urllib3's NewConnectionError (refused, DNS) subclasses ConnectTimeoutError.
    timed_out = isinstance(reason, (ReadTimeoutError, ConnectTimeoutError))
    if isinstance(exc, requests.exceptions.Timeout) or (
        timed_out and not isinstance(reason, NewConnectionError)
    ):
        return RequestTimeoutError(
            f"Klaviyo did not answer {path} within {request.timeout[1]:g} s (after retries); "
            "raise timeout= or check the network."
        )
    if isinstance(exc, requests.exceptions.RetryError):
        return NetworkError(f"retries to Klaviyo {path} ran out: {_safe(exc)}")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return NetworkError(f"could not reach Klaviyo at {base_url} ({path}): {_safe(exc)}")
    return TransportError(f"request to Klaviyo {path} failed: {_safe(exc)}")


class KlaviyoAPI:
    """Klaviyo's REST API over a ``Transport``: builds requests, reads answers.

    Returns an ``Answer`` for Klaviyo's documented success and raises a typed error for
    anything else.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        base_url: str,
        public_api_key: str,
        private_api_key: str,
        revision: str,
        strict_revision: bool = False,
        timeout: float,
    ) -> None:
        self._transport = transport
        self._base_url = base_url.rstrip("/")
        self._public_api_key = public_api_key
        self._revision = revision
        self._timeout = (min(CONNECT_TIMEOUT, timeout), timeout)
        self._headers = {
            "Authorization": f"Klaviyo-API-Key {private_api_key}",
            "revision": revision,
            "Accept": "application/vnd.api+json",
            "Content-Type": "application/vnd.api+json",
            "User-Agent": f"klaviyo-signal/{VERSION}",
        }
        if strict_revision:
            self._headers[FALL_FORWARD_OPT_OUT] = "1"
        # Klaviyo's client-side endpoints take the public key, and a private key must
        # never travel to them.
        self._public_headers = {
            name: value for name, value in self._headers.items() if name != "Authorization"
        }

    def __repr__(self) -> str:
        return f"<KlaviyoAPI {self._base_url}>"

    def build(
        self, method: str, path: str, body: bytes = b"", *, timeout: float | None = None
    ) -> HTTPRequest:
        """Return the request for ``path``: the one place URLs and headers are made.

        Args:
            method: ``"POST"`` or ``"GET"``.
            path: The endpoint path, e.g. ``/api/events``.
            body: The encoded JSON.
            timeout: A shorter read timeout for this request (the worker's shutdown deadline).
        """
        limit = self._timeout
        if timeout is not None and timeout < limit[1]:
            limit = (min(limit[0], timeout), timeout)
        url, headers = self._base_url + path, self._headers
        if path.startswith("/client/"):
            url += f"?company_id={self._public_api_key}"
            headers = self._public_headers
        return HTTPRequest(method, url, headers, body, limit)

    def post(self, path: str, body: bytes, *, timeout: float | None = None) -> Answer:
        """POST a JSON body; raise ``APIError``/``TransportError`` when it does not succeed.

        Args:
            path: The endpoint path, e.g. ``/api/events``.
            body: The encoded JSON.
            timeout: A shorter read timeout for this request (the worker's shutdown deadline).
        """
        return self.send(self.build("POST", path, body, timeout=timeout))

    def get(self, path: str, *, endpoint: str, timeout: float | None = None) -> Answer:
        """GET a resource; raise ``APIError``/``TransportError`` as ``post`` does.

        Args:
            path: The path with its query, e.g. ``/api/profile-bulk-import-jobs/01H``.
            endpoint: The operation it is, e.g. ``GET /api/profile-bulk-import-jobs/{id}``
                (its documented answers and scopes).
            timeout: A shorter read timeout for this request.
        """
        return self.send(self.build("GET", path, timeout=timeout), endpoint)

    def send(self, request: HTTPRequest, endpoint: str | None = None) -> Answer:
        """Send a built request and read its answer.

        Args:
            request: What ``build`` made.
            endpoint: The operation, when its path has an id in it; default the method
                and the URL's path.
        """
        response = self._transport.handle(request)
        payload = _parse(response)
        if endpoint is None:
            endpoint = f"{request.method} {urlsplit(request.url).path}"
        if response.status >= 400:
            raise self._refusal(response, payload, endpoint)
        problem = _not_klaviyo(endpoint, response, payload)
        if problem is not None:
            raise UnexpectedResponseError(
                response.status,
                problem,
                request_id=_request_id(response),
                headers=dict(response.headers),
                scopes=required_scopes(endpoint),
            )
        return Answer(
            status=response.status,
            headers=dict(response.headers),
            body=payload,
            retries=response.retries,
            sent_bytes=len(request.body),
        )

    def _refusal(self, response: HTTPResponse, payload: JSON, endpoint: str) -> APIError:
        """Return the typed error for a 4xx/5xx answer."""
        cls = api_error_for(response.status)
        # A 403 that is not Klaviyo's JSON:API errors document (or carries Cloudflare's
        # challenge header) never reached the API, so the key's scopes are not the problem.
        if response.status == 403 and (
            "cf-mitigated" in response.headers or not _is_error_document(payload)
        ):
            cls = BlockedByEdgeError
        return cls(
            response.status,
            _records(payload),
            request_id=_request_id(response),
            headers=dict(response.headers),
            retry_after=_retry_after(response.headers.get("Retry-After")),
            scopes=required_scopes(endpoint),
            advice=_gone(self._revision) if response.status == 410 else None,
        )

    def close(self) -> None:
        """Close the transport's connections."""
        self._transport.close()


def _gone(name: str) -> str:
    """What a 410 means: the same words as the RevisionWarning at construction."""
    status = revision(name).status()
    if status.state == "retired":
        return status.describe(name).capitalize() + "."
    return (
        f"Klaviyo treats revision {name} as retired; pass revision={DEFAULT_REVISION!r} "
        "(the newest this package supports)."
    )


def _request_id(response: HTTPResponse) -> str | None:
    return response.headers.get("X-Request-Id") or response.headers.get("x-klaviyo-request-id")


def _safe(exc: BaseException) -> str:
    """Describe a requests error by its class; its text can hold URLs, never keys, but be brief."""
    reason = exc.args[0] if exc.args else exc
    inner = getattr(reason, "reason", None)
    return type(inner or reason).__name__ if inner or reason else type(exc).__name__
