"""Explain a call: what it would send to Klaviyo, and why, without sending anything.

``explain`` runs the same stages as ``Client._call`` (message, consent gate, blueprint,
wire bodies) and stops before delivery, so what it shows is what a real call would send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

from ._blueprint.blueprint import Blueprint
from ._calls.consent import consent_drop_reason
from ._calls.message import build_message
from ._calls.subscription import build_subscription
from ._klaviyo.json import JSON
from ._klaviyo.models import KlaviyoObject, with_backfill
from ._klaviyo.revisions import FALL_FORWARD_OPT_OUT, check_backfill
from ._klaviyo.revisions import revision as revision_named
from ._klaviyo.wire import request
from ._version import VERSION

__all__ = ["ExplainKind", "ExplainedRequest", "Explanation", "explain"]

# The positional parameters of identify, track and page, in order.
_POSITIONAL: dict[str, tuple[str, ...]] = {
    "identify": ("user_id", "traits"),
    "track": ("event", "properties"),
    "page": ("name", "properties"),
}
_KEYWORDS = frozenset(
    {"user_id", "anonymous_id", "traits", "context", "consent", "timestamp", "message_id"}
)
# Only events can be backfills.
_EVENT_KEYWORDS = frozenset({"backfill"})
# subscribe and unsubscribe take keywords only.
_SUBSCRIPTION_KEYWORDS: dict[str, frozenset[str]] = {
    "subscribe": frozenset(
        {
            "email",
            "phone",
            "list_id",
            "channels",
            "custom_source",
            "consented_at",
            "consent",
            "message_id",
        }
    ),
    "unsubscribe": frozenset({"email", "phone", "list_id", "channels", "message_id"}),
}
ExplainKind = Literal["identify", "track", "page", "subscribe", "unsubscribe"]
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
        raise TypeError(
            "explain: kind must be 'identify', 'track', 'page', 'subscribe' or "
            f"'unsubscribe', got {kind!r}"
        )
    positional = _POSITIONAL[kind]
    if len(args) > len(positional):
        raise TypeError(
            f"{kind}() takes at most {len(positional)} positional arguments ({len(args)} given)"
        )
    fields = dict(zip(positional[: len(args)], args, strict=True))
    allowed = _KEYWORDS | set(positional) | (_EVENT_KEYWORDS if kind != "identify" else set())
    for name, value in kwargs.items():
        if name not in allowed:
            raise TypeError(f"{kind}() got an unexpected keyword argument {name!r}")
        if name in fields:
            raise TypeError(f"{kind}() got multiple values for argument {name!r}")
        fields[name] = value
    if kind == "track" and "event" not in fields:
        raise TypeError("track() missing 1 required positional argument: 'event'")
    return fields


@attrs.frozen
class _Target:
    """Where the explained requests go: the client's revision, options and public key."""

    revision: str
    strict_revision: bool
    public_api_key: str
    backfill: bool


def _headers(target: _Target, path: str) -> dict[str, str]:
    headers = {
        "Authorization": _MASKED_AUTHORIZATION,
        "revision": target.revision,
        "Accept": "application/vnd.api+json",
        "Content-Type": "application/vnd.api+json",
        "User-Agent": f"klaviyo-signal/{VERSION}",
    }
    if path.startswith("/client/"):
        del headers["Authorization"]  # the client-side endpoints take the public key only
    if target.strict_revision:
        headers[FALL_FORWARD_OPT_OUT] = "1"
    return headers


def _request(obj: KlaviyoObject, target: _Target) -> ExplainedRequest:
    """Return the request ``obj`` becomes in sync mode (one job per subscription)."""
    path, body = request(obj)
    headers = _headers(target, path)
    if path.startswith("/client/"):
        path += f"?company_id={target.public_api_key}"
    return ExplainedRequest("POST", path, headers, body)


def explain(
    *,
    blueprint: Blueprint,
    require_consent: bool,
    default_phone_region: str | None,
    revision: str,
    strict_revision: bool = False,
    public_api_key: str = "PUBLIC",
    backfill: bool = False,
    kind: ExplainKind,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> Explanation:
    """Return what ``Client.<kind>(*args, **kwargs)`` would send, without sending it.

    Args:
        blueprint: The client's blueprint.
        require_consent: The client's ``require_consent``.
        default_phone_region: The client's ``default_phone_region``.
        revision: The API revision the requests carry and are shaped for.
        strict_revision: The client's ``strict_revision``.
        public_api_key: The public key the client-side endpoint is sent with.
        backfill: The client's ``backfill`` default.
        kind: ``"identify"``, ``"track"``, ``"page"``, ``"subscribe"`` or
            ``"unsubscribe"``.
        args: The positional arguments of that call.
        kwargs: Its keyword arguments.

    Raises:
        TypeError: The arguments do not fit the call, as the method itself would raise.
        ValidationError: The input breaks a rule, exactly as the call would raise.
    """
    target = _Target(revision, strict_revision, public_api_key, backfill)
    if kind in {"subscribe", "unsubscribe"}:
        return _explain_subscription(
            kind,
            args,
            kwargs,
            default_phone_region,
            target,
        )
    fields = _fields(kind, args, kwargs)
    wanted = fields.pop("backfill", None)
    backfill = target.backfill if wanted is None else wanted
    the_revision = revision_named(revision)
    if backfill:
        check_backfill(backfill, the_revision)
    named = fields.get("event") if kind == "track" else fields.get("name")
    message = build_message(
        kind,  # type: ignore[arg-type]  # a subscription kind returned above
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
    objects = the_revision.shape(with_backfill(decision.objects, backfill))
    requests = tuple(_request(obj, target) for obj in objects)
    return Explanation("send", None, decision.rule, requests)


def _explain_subscription(
    kind: Literal["subscribe", "unsubscribe"],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    default_phone_region: str | None,
    target: _Target,
) -> Explanation:
    """Explain a subscribe/unsubscribe: the job sync mode would send for it alone.

    In background mode the same profile goes out in a job with other calls for the same
    list and source; the profile's entry in that job is the one shown here.
    """
    if args:
        raise TypeError(f"{kind}() takes 0 positional arguments but {len(args)} were given")
    for name in kwargs:
        if name not in _SUBSCRIPTION_KEYWORDS[kind]:
            raise TypeError(f"{kind}() got an unexpected keyword argument {name!r}")
    sub = build_subscription(kind, default_phone_region=default_phone_region, **kwargs)
    return Explanation("send", None, None, (_request(sub, target),))
