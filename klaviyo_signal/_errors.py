"""Every exception klaviyo-signal raises.

The tree::

    KlaviyoSignalError
    ├── ConfigurationError      (also ValueError)  the Client was built wrong
    ├── ValidationError         (also ValueError)  a call's input breaks a rule
    │   └── BlueprintError                          a blueprint file or dict is malformed
    ├── APIError                                   Klaviyo answered with an error status
    │   ├── BadRequestError         400
    │   ├── AuthenticationError     401
    │   ├── PermissionDeniedError   403
    │   │   └── BlockedByEdgeError  403             an edge (Cloudflare, WAF) blocked it
    │   ├── RevisionGoneError       410
    │   ├── RateLimitError          429
    │   ├── ServerError             5xx
    │   └── UnexpectedResponseError 3xx, other 2xx  not Klaviyo's answer: nothing delivered
    └── TransportError                             no usable answer from Klaviyo
        ├── NetworkError
        └── RequestTimeoutError

One warning: ``RevisionWarning`` (a ``UserWarning``), when a Client is built with a
deprecated or retired API revision.

Messages say what to do next, and never contain the private API key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import attrs

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "BlockedByEdgeError",
    "BlueprintError",
    "ConfigurationError",
    "ErrorRecord",
    "KlaviyoSignalError",
    "NetworkError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTimeoutError",
    "RevisionGoneError",
    "RevisionWarning",
    "ServerError",
    "TransportError",
    "UnexpectedResponseError",
    "ValidationError",
    "api_error_for",
    "mask",
    "shown",
]

DEFAULT_SCOPES = ("events:write", "profiles:write")
"""What identify, track and page need: the scopes an error names for an endpoint whose
own are unknown (``_klaviyo.operations.required_scopes``)."""


class KlaviyoSignalError(Exception):
    """Root of every error this library raises."""


class RevisionWarning(UserWarning):
    """The Client sends a revision Klaviyo has deprecated or retired; the text says what to do."""


class ConfigurationError(KlaviyoSignalError, ValueError):
    """The Client's keys or options are wrong; raised when the Client is built."""


class ValidationError(KlaviyoSignalError, ValueError):
    """A call's input breaks one of Klaviyo's rules; raised by the call itself."""


class BlueprintError(ValidationError):
    """A blueprint file (or dict) is malformed; ``problems`` lists every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = tuple(problems)
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"{source}: {count}:\n" + "\n".join(f"  {p}" for p in problems))


@attrs.frozen
class ErrorRecord:
    """One entry of Klaviyo's JSON:API ``errors`` array."""

    code: str | None
    title: str | None
    detail: str | None
    pointer: str | None


class APIError(KlaviyoSignalError):
    """Klaviyo answered with an error status.

    Attributes:
        status: The HTTP status code.
        errors: Klaviyo's error records, in the order it sent them.
        request_id: Klaviyo's request id (quote it to Klaviyo support), if sent.
        headers: The response headers.
        scopes: The private-key scopes the request's endpoint needs; the 403 advice
            names them, since they differ per endpoint.
        advice: What to do, when the sender knows better than the class's hint (a 410
            names the retired revision).
        transient: Whether the background worker sends it again with backoff, as it does
            after a 5xx (class attribute).
    """

    hint = "See https://developers.klaviyo.com/en/docs/rate_limits_and_error_handling."
    transient: ClassVar[bool] = False

    def __init__(
        self,
        status: int,
        errors: tuple[ErrorRecord, ...] = (),
        *,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        scopes: tuple[str, ...] = DEFAULT_SCOPES,
        advice: str | None = None,
    ) -> None:
        self.status = status
        self.advice = advice
        self.errors = errors
        self.request_id = request_id
        self.headers: Mapping[str, str] = dict(headers or {})
        self.retry_after = retry_after
        self.scopes = scopes
        super().__init__(self._message())

    def _message(self) -> str:
        parts = [f"Klaviyo answered HTTP {self.status}."]
        for err in self.errors:
            text = err.detail or err.title or err.code or "no detail"
            if err.pointer:
                text += f" (at {err.pointer})"
            parts.append(text)
        # A hint may name the endpoint's scopes; the others have no placeholder to fill.
        parts.append(self.advice or self.hint.format(scopes=_and(self.scopes)))
        if self.request_id:
            parts.append(f"Request id: {self.request_id}.")
        return " ".join(parts)


class BadRequestError(APIError):
    """400: Klaviyo rejected the body (a missing profile identifier or a bad field)."""

    hint = (
        "Klaviyo rejected the request body; the detail and pointer above name the field. "
        "Every event needs one of email, phone_number, external_id or anonymous_id."
    )


class AuthenticationError(APIError):
    """401: the private API key is wrong, revoked or missing."""

    hint = (
        "Verify the private key in Klaviyo under Account > Settings > API Keys, and that it "
        "has the events:write and profiles:write scopes."
    )


class PermissionDeniedError(APIError):
    """403: the key is valid but lacks a scope this call needs."""

    hint = (
        "The private key lacks a scope: give it {scopes} "
        "(Account > Settings > API Keys > Edit scopes)."
    )


class BlockedByEdgeError(PermissionDeniedError):
    """403 from an edge in front of Klaviyo's API (a Cloudflare challenge, a WAF), not a scope."""

    hint = (
        "The request was blocked before it reached Klaviyo's API (a Cloudflare challenge or "
        "WAF rule, often for traffic from cloud IPs such as AWS Lambda); the key's scopes were "
        "not checked. Background mode retries it with backoff; if it persists, send from "
        "another egress IP or ask Klaviyo support, quoting any ids below."
    )
    transient = True

    def _message(self) -> str:
        parts = [f"HTTP {self.status} from an edge in front of Klaviyo's API.", self.hint]
        ray = _header(self.headers, "cf-ray")
        if ray:
            parts.append(f"Cloudflare ray id: {ray}.")
        if self.request_id:
            parts.append(f"Request id: {self.request_id}.")
        return " ".join(parts)


class RevisionGoneError(APIError):
    """410: the API revision this client sends is retired."""

    hint = (
        "This API revision is retired: pass a current one with Client(..., revision='YYYY-MM-DD')."
    )


class RateLimitError(APIError):
    """429: too many requests; ``retry_after`` says how many seconds to wait, if Klaviyo said."""

    hint = (
        "Klaviyo's rate limit was hit and retries ran out. Send in background mode (batched), "
        "raise max_retries, or slow down."
    )


class ServerError(APIError):
    """5xx: Klaviyo failed; retries ran out."""

    hint = "Klaviyo had a server error and retries ran out; try again later."


class UnexpectedResponseError(APIError):
    """An answer Klaviyo's API does not send (a redirect, an HTML page): nothing was delivered.

    Attributes:
        problem: What was wrong with the answer.
    """

    hint = (
        "Nothing was delivered. Check base_url (Klaviyo's is https://a.klaviyo.com) and any "
        "proxy or captive portal between this process and Klaviyo."
    )

    def __init__(
        self,
        status: int,
        problem: str,
        *,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        scopes: tuple[str, ...] = DEFAULT_SCOPES,
    ) -> None:
        self.problem = problem
        super().__init__(status, request_id=request_id, headers=headers, scopes=scopes)

    def _message(self) -> str:
        parts = [f"Not an answer from Klaviyo's API: HTTP {self.status}{self.problem}"]
        location = _header(self.headers, "Location")
        if location:
            parts.append(f"(Location: {location})")
        parts[-1] += "."
        parts.append(self.hint)
        if self.request_id:
            parts.append(f"Request id: {self.request_id}.")
        return " ".join(parts)


class TransportError(KlaviyoSignalError):
    """No usable HTTP answer came back from Klaviyo."""


class NetworkError(TransportError):
    """The connection failed (DNS, refused, reset, TLS)."""


class RequestTimeoutError(TransportError):
    """Klaviyo did not answer within the configured timeout."""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Return a header's value, whatever the case of its name."""
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def mask(private_api_key: str) -> str:
    """Return a private key with everything after its ``pk_`` prefix hidden."""
    return "pk_***" if private_api_key.startswith("pk_") else "***"


def shown(value: object) -> str:
    """Return ``value`` as an error message may show it: its repr, unless it could hold a key.

    A value holding ``pk_`` may be a private key passed in the wrong place, so it is shown
    masked (``'pk_***'``), never whole.
    """
    text = repr(value)
    if "pk_" not in text:
        return text
    shown = repr(mask(value)) if isinstance(value, str) else f"a {type(value).__name__}"
    return (
        f"{shown} (it looks like a private key, pk_***: the private key goes only in "
        "Client's second argument)"
    )


def _and(names: tuple[str, ...]) -> str:
    """Return ``a, b and c``."""
    if len(names) < 2:
        return "".join(names)
    return f"{', '.join(names[:-1])} and {names[-1]}"


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    410: RevisionGoneError,
    429: RateLimitError,
}


def api_error_for(status: int) -> type[APIError]:
    """Return the APIError subclass for an HTTP error status."""
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, APIError)
