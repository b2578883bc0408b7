"""Explain a call: what it would send to Klaviyo, and why, without sending anything.

``explain`` runs the same stages as a sync-mode call (message, consent gate, blueprint,
the wire's bytes, ``KlaviyoAPI.build``'s request) and stops where the request would
reach the transport, so what it shows is what a real call would send.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs

from ._blueprint.blueprint import Blueprint
from ._blueprint.compiled import compile_blueprint
from ._calls.consent import consent_drop_reason
from ._calls.context import RequestContext
from ._calls.message import build_message
from ._calls.subscription import build_subscription
from ._klaviyo.json import JSON
from ._klaviyo.models import KlaviyoObject, with_backfill
from ._klaviyo.revisions import call_backfill
from ._klaviyo.revisions import revision as revision_named
from ._klaviyo.transport import HTTPRequest, HTTPResponse, KlaviyoAPI, masked
from ._klaviyo.wire import request

__all__ = ["CALL_KEYWORDS", "ExplainKind", "ExplainedRequest", "Explanation", "explain"]

# The positional parameters of identify, track and page, in order.
_POSITIONAL: dict[str, tuple[str, ...]] = {
    "identify": ("user_id", "traits"),
    "track": ("event", "properties"),
    "page": ("name", "properties"),
}
_KEYWORDS = frozenset(
    {"user_id", "anonymous_id", "traits", "context", "consent", "timestamp", "message_id"}
)
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
CALL_KEYWORDS: dict[str, frozenset[str]] = {
    "identify": _KEYWORDS | set(_POSITIONAL["identify"]),
    # Only events can be backfills.
    "track": _KEYWORDS | set(_POSITIONAL["track"]) | {"backfill"},
    "page": _KEYWORDS | set(_POSITIONAL["page"]) | {"backfill"},
    **_SUBSCRIPTION_KEYWORDS,
}
"""Every argument each call method takes, by name (``tests/test_explain.py`` checks them
against the methods' signatures)."""
# What a request context fills in, in ``RequestContext.fill``'s order.
_FILLED = ("user_id", "anonymous_id", "traits", "consent")
ExplainKind = Literal["identify", "track", "page", "subscribe", "unsubscribe"]


@attrs.frozen
class ExplainedRequest:
    """One HTTP request a call would make; ``body`` is its JSON as Python data (a number
    whose digits no float writes, such as a ``Decimal("42.50")`` revenue, as a Decimal)."""

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
    allowed = CALL_KEYWORDS[kind]
    for name, value in kwargs.items():
        if name not in allowed:
            raise TypeError(f"{kind}() got an unexpected keyword argument {name!r}")
        if name in fields:
            raise TypeError(f"{kind}() got multiple values for argument {name!r}")
        fields[name] = value
    if kind == "track" and "event" not in fields:
        raise TypeError("track() missing 1 required positional argument: 'event'")
    return fields


class _Unsent:
    """The transport of an explanation: nothing is ever sent."""

    def handle(self, request: HTTPRequest) -> HTTPResponse:
        raise RuntimeError("explain never sends")  # a bug if reached

    def close(self) -> None:
        """Nothing to release."""


def _api(revision: str, strict_revision: bool, public_api_key: str) -> KlaviyoAPI:
    # The private key never leaves the client, not even in an explanation: the request
    # is built with a stand-in, and its headers are shown masked anyway.
    return KlaviyoAPI(
        _Unsent(),
        base_url="https://a.klaviyo.com",
        public_api_key=public_api_key,
        private_api_key="pk_explain",
        revision=revision,
        strict_revision=strict_revision,
        timeout=10.0,
    )


def _number(text: str) -> float | Decimal:
    """A JSON number as the float that writes it, or else the Decimal of its exact digits."""
    value = float(text)
    return value if repr(value) == text else Decimal(text)


def _loads(body: bytes) -> JSON:
    loaded: JSON = json.loads(body, parse_float=_number)
    return loaded


def _request(obj: KlaviyoObject, api: KlaviyoAPI) -> ExplainedRequest:
    """Return the request ``obj`` becomes in sync mode (one job per subscription)."""
    path, body = request(obj)
    built = api.build("POST", path, body)
    parts = urlsplit(built.url)
    shown = parts.path + (f"?{parts.query}" if parts.query else "")
    return ExplainedRequest(built.method, shown, masked(built.headers), _loads(body))


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
    request: RequestContext | None = None,
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
        request: The request context the call would be made in, if any.

    Raises:
        TypeError: The arguments do not fit the call, as the method itself would raise.
        ValidationError: The input breaks a rule, exactly as the call would raise.
    """
    api = _api(revision, strict_revision, public_api_key)
    if kind in {"subscribe", "unsubscribe"}:
        return _explain_subscription(kind, args, kwargs, default_phone_region, api)
    fields = _fields(kind, args, kwargs)
    if request is not None:
        filled = request.fill(
            fields.get("user_id"),
            fields.get("anonymous_id"),
            fields.get("traits"),
            fields.get("consent"),
            fields.get("context"),
        )
        for name, value in zip(_FILLED, filled, strict=True):
            if value is not None:
                fields[name] = value
    the_revision = revision_named(revision)
    backfill = call_backfill(fields.pop("backfill", None), backfill, the_revision)
    named = fields.get("event") if kind == "track" else fields.get("name")
    compiled = compile_blueprint(blueprint, max_properties=the_revision.max_event_properties)
    message = build_message(
        kind,  # type: ignore[arg-type]  # a subscription kind returned above
        default_phone_region=default_phone_region,
        reads=compiled.reads(kind, named),
        max_properties=compiled.max_properties,
        **fields,
    )
    reason = consent_drop_reason(message.consent, require_consent=require_consent)
    if reason is not None:
        return Explanation("drop", reason, None)
    decision = compiled.decide(message)
    if decision.drop_reason is not None:
        return Explanation("drop", decision.drop_reason, decision.rule)
    objects = the_revision.shape(with_backfill(decision.objects, backfill))
    requests = tuple(_request(obj, api) for obj in objects)
    return Explanation("send", None, decision.rule, requests)


def _explain_subscription(
    kind: Literal["subscribe", "unsubscribe"],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    default_phone_region: str | None,
    api: KlaviyoAPI,
) -> Explanation:
    """Explain a subscribe/unsubscribe: the job sync mode would send for it alone.

    In background mode the same profile goes out in a job with other calls for the same
    list and source; the profile's entry in that job is the one shown here.
    """
    if args:
        raise TypeError(f"{kind}() takes 0 positional arguments but {len(args)} were given")
    for name in kwargs:
        if name not in CALL_KEYWORDS[kind]:
            raise TypeError(f"{kind}() got an unexpected keyword argument {name!r}")
    sub = build_subscription(kind, default_phone_region=default_phone_region, **kwargs)
    return Explanation("send", None, None, (_request(sub, api),))
