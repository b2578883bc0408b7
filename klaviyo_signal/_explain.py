"""Explain a call: what it would send to Klaviyo, and why, without sending anything.

``explain`` runs the same stages as ``Client._call`` (message, consent gate, blueprint,
wire bodies) and stops before delivery, so what it shows is what a real call would send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

from ._blueprint import Blueprint
from ._consent import consent_drop_reason
from ._json import JSON
from ._messages import Kind, build_message
from ._models import Event, KlaviyoObject, Profile
from ._subscriptions import subscription_body
from ._version import VERSION
from ._wire import event_body, profile_body

__all__ = ["ExplainedRequest", "Explanation", "explain"]

# The positional parameters of identify, track and page, in order.
_POSITIONAL: dict[str, tuple[str, ...]] = {
    "identify": ("user_id", "traits"),
    "track": ("event", "properties"),
    "page": ("name", "properties"),
}
_KEYWORDS = frozenset(
    {"user_id", "anonymous_id", "traits", "context", "consent", "timestamp", "message_id"}
)
# The private key never leaves the client, not even in an explanation.
_MASKED_AUTHORIZATION = "Klaviyo-API-Key pk_***"


@attrs.frozen
class ExplainedRequest:
    """One HTTP request a call would make; ``body`` is the JSON as Python data."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: JSON


@attrs.frozen
class Explanation:
    """What one call would do: send these requests, or drop, and which rule decided.

    Attributes:
        status: ``"send"`` or ``"drop"``.
        reason: Why it is dropped (None when sent).
        rule: The rule that decided: an event name, ``"page"``, ``"identify"`` or
            ``"catch_all"``; None when no rule matched or consent stopped the call.
        requests: The requests, in the order they would be sent (empty when dropped).
    """

    status: Literal["send", "drop"]
    reason: str | None
    rule: str | None
    requests: tuple[ExplainedRequest, ...] = ()


def _fields(kind: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Bind ``args``/``kwargs`` the way ``Client.<kind>`` would, with its TypeErrors."""
    if kind not in _POSITIONAL:
        raise TypeError(f"explain: kind must be 'identify', 'track' or 'page', got {kind!r}")
    positional = _POSITIONAL[kind]
    if len(args) > len(positional):
        raise TypeError(
            f"{kind}() takes at most {len(positional)} positional arguments ({len(args)} given)"
        )
    fields = dict(zip(positional[: len(args)], args, strict=True))
    allowed = _KEYWORDS | set(positional)
    for name, value in kwargs.items():
        if name not in allowed:
            raise TypeError(f"{kind}() got an unexpected keyword argument {name!r}")
        if name in fields:
            raise TypeError(f"{kind}() got multiple values for argument {name!r}")
        fields[name] = value
    if kind == "track" and "event" not in fields:
        raise TypeError("track() missing 1 required positional argument: 'event'")
    return fields


def _headers(revision: str) -> dict[str, str]:
    return {
        "Authorization": _MASKED_AUTHORIZATION,
        "revision": revision,
        "Accept": "application/vnd.api+json",
        "Content-Type": "application/vnd.api+json",
        "User-Agent": f"klaviyo-signal/{VERSION}",
    }


def _request(obj: KlaviyoObject, headers: Mapping[str, str]) -> ExplainedRequest:
    """Return the request ``obj`` becomes in sync mode (one job per subscription)."""
    if isinstance(obj, Event):
        return ExplainedRequest("POST", "/api/events", headers, event_body(obj))
    if isinstance(obj, Profile):
        return ExplainedRequest("POST", "/api/profile-import", headers, profile_body(obj))
    return ExplainedRequest("POST", obj.path, headers, subscription_body((obj,)))


def explain(
    *,
    blueprint: Blueprint,
    require_consent: bool,
    default_phone_region: str | None,
    revision: str,
    kind: Kind,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> Explanation:
    """Return what ``Client.<kind>(*args, **kwargs)`` would send, without sending it.

    Args:
        blueprint: The client's blueprint.
        require_consent: The client's ``require_consent``.
        default_phone_region: The client's ``default_phone_region``.
        revision: The API revision the requests carry.
        kind: ``"identify"``, ``"track"`` or ``"page"``.
        args: The positional arguments of that call.
        kwargs: Its keyword arguments.

    Raises:
        TypeError: The arguments do not fit the call, as the method itself would raise.
        ValidationError: The input breaks a rule, exactly as the call would raise.
    """
    fields = _fields(kind, args, kwargs)
    named = fields.get("event") if kind == "track" else fields.get("name")
    message = build_message(
        kind,
        default_phone_region=default_phone_region,
        reads=blueprint.reads(kind, named),
        **fields,
    )
    reason = consent_drop_reason(message.consent, require_consent=require_consent)
    if reason is not None:
        return Explanation("drop", reason, None)
    decision = blueprint.decide(message)
    if decision.drop_reason is not None:
        return Explanation("drop", decision.drop_reason, decision.rule)
    headers = _headers(revision)
    requests = tuple(_request(obj, headers) for obj in decision.objects)
    return Explanation("send", None, decision.rule, requests)
