"""The request context: who the current request (or task) is about, and what they consented to.

A web middleware or a task hook sets it once per unit of work (``request_context``), and
``Client.identify``/``track``/``page`` read it for the arguments the call leaves out, so a
handler can write ``client.track("Order Completed", props)`` without ``user_id=`` or
``consent=``. It lives in a ``contextvars.ContextVar``: each thread and each asyncio task
sees its own, and leaving the ``with`` block restores the one before.

The context describes one person. A call that names someone else (a ``user_id`` or
``anonymous_id`` other than the context's) takes nothing from it, so an admin acting for a
customer never merges the two into one profile or applies one's consent to the other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

import attrs

from .._errors import ValidationError
from .._klaviyo.json import JSON, clean_properties
from .consent import resolve_consent
from .identity import normalize_email, normalize_id

__all__ = [
    "CURRENT",
    "RequestContext",
    "current_context",
    "make_context",
    "request_context",
    "using",
]

#: The context of the running request or task; None (or unset): there is none.
CURRENT: ContextVar[RequestContext | None] = ContextVar("klaviyo_signal_request_context")

_NONE: Mapping[str, Any] = {}


@attrs.frozen
class RequestContext:
    """Who the current request or task is about; the calls made inside it default to this.

    Built by ``klaviyo_signal.request_context`` (or an integration's middleware), which
    checks every value; read it with ``klaviyo_signal.current_context()``.
    """

    user_id: str | None = None
    """Your id for the person (becomes Klaviyo's ``external_id``)."""
    anonymous_id: str | None = None
    """The browser's or device's anonymous id (e.g. Segment's ``ajs_anonymous_id`` cookie)."""
    traits: Mapping[str, JSON] = attrs.field(factory=dict)
    """Profile traits every call of the context carries (e.g. ``email``); a call's own win."""
    consent: Mapping[str, bool] = attrs.field(factory=dict)
    """Consent by category (``{"marketing": False}``); a call's own categories win."""

    def fill(
        self,
        user_id: object,
        anonymous_id: object,
        traits: Mapping[str, Any] | None,
        consent: Mapping[str, Any] | None,
        context: Mapping[str, Any] | None,
    ) -> tuple[Any, Any, Any, Any]:
        """Return a call's ``user_id``, ``anonymous_id``, ``traits`` and ``consent``, the ones it
        left out taken from this context.

        Explicit arguments win: ``user_id`` and ``anonymous_id`` whole, ``traits`` key by key
        and ``consent`` category by category (case-insensitively, like ``consent=`` over
        Segment's ``context.consent``; a category in the call's ``context.consent`` wins too).
        A call naming another person than this context's gets nothing from it. Values the
        call passes are not checked here: the call checks them and names the field.
        """
        if _other(user_id, self.user_id) or _other(anonymous_id, self.anonymous_id):
            return user_id, anonymous_id, traits, consent
        if user_id is None:
            user_id = self.user_id
        if anonymous_id is None:
            anonymous_id = self.anonymous_id
        if self.traits:
            if traits is None:
                traits = self.traits
            elif isinstance(traits, Mapping):
                traits = {**self.traits, **traits}
        if self.consent and (consent is None or isinstance(consent, Mapping)):
            consent = self._consent_under(consent, context)
        return user_id, anonymous_id, traits, consent

    def _consent_under(
        self, consent: Mapping[str, Any] | None, context: Mapping[str, Any] | None
    ) -> Mapping[str, Any]:
        """Return this context's consent with the call's own categories over it."""
        own = _segment_categories(context)
        if consent is not None:
            own |= {key.casefold() for key in consent if isinstance(key, str)}
        if not own:
            return self.consent
        merged: dict[Any, Any] = {k: v for k, v in self.consent.items() if k.casefold() not in own}
        if consent is not None:
            merged.update(consent)
        return merged

    def under(self, inner: RequestContext) -> RequestContext:
        """Return ``inner`` nested in this context: what it leaves out comes from this one."""
        user_id, anonymous_id, traits, consent = self.fill(
            inner.user_id, inner.anonymous_id, inner.traits or None, inner.consent or None, None
        )
        return RequestContext(user_id, anonymous_id, dict(traits or _NONE), dict(consent or _NONE))


def _other(given: object, mine: str | None) -> bool:
    """Whether a call's identifier names someone else than the context's."""
    if given is None or mine is None or given == mine:
        return False
    # An int id is sent as its decimal digits, so 42 and "42" are one person.
    return not (isinstance(given, int) and not isinstance(given, bool) and str(given) == mine)


def _segment_categories(context: Mapping[str, Any] | None) -> set[str]:
    """Return the casefolded categories of a call's ``context.consent.categoryPreferences``."""
    if not context:
        return set()
    consent = context.get("consent") if isinstance(context, Mapping) else None
    preferences = consent.get("categoryPreferences") if isinstance(consent, Mapping) else None
    if not isinstance(preferences, Mapping):
        return set()
    return {key.casefold() for key in preferences if isinstance(key, str)}


def make_context(
    *,
    user_id: object = None,
    anonymous_id: object = None,
    traits: Mapping[str, object] | None = None,
    consent: Mapping[str, object] | None = None,
    skip: Callable[[str, ValidationError], None] | None = None,
) -> RequestContext:
    """Return a checked RequestContext.

    Args:
        user_id: A str or int id, or None.
        anonymous_id: A str or int id, or None.
        traits: Profile traits; an ``email`` among them must be an email address.
        consent: Category -> bool.
        skip: Called with the field's name and the error for each value that breaks a rule,
            which is then left out (an integration reading cookies a visitor controls);
            None: raise the error.

    Raises:
        ValidationError: A value breaks a rule (only when ``skip`` is None).
    """
    checked: dict[str, Any] = {}
    for field, value, check in (
        ("user_id", user_id, _check_id),
        ("anonymous_id", anonymous_id, _check_id),
        ("traits", traits, _check_traits),
        ("consent", consent, _check_consent),
    ):
        if value is None:
            continue
        try:
            checked[field] = check(value, field)
        except ValidationError as error:
            if skip is None:
                raise
            skip(field, error)
    return RequestContext(**checked)


def _check_id(value: object, field: str) -> str:
    return normalize_id(value, f"request context {field}")


def _check_traits(value: object, field: str) -> dict[str, JSON]:
    traits = clean_properties(value, f"request context {field}")  # type: ignore[arg-type]
    if traits.get("email") is not None:
        traits["email"] = normalize_email(traits["email"], f"request context {field}['email']")
    return traits


def _check_consent(value: object, field: str) -> dict[str, bool]:
    if not isinstance(value, Mapping):
        raise ValidationError(
            f"request context {field}: must be a mapping of category name to True or False, "
            f"got a value of type {type(value).__name__}"
        )
    return dict(resolve_consent(value, _NONE))


@contextlib.contextmanager
def using(context: RequestContext | None) -> Iterator[RequestContext | None]:
    """Make ``context`` the current one (None: none) for the block, whatever was before.

    The integrations use it, so that no request or task ever sees another's context.
    """
    token = CURRENT.set(context)
    try:
        yield context
    finally:
        CURRENT.reset(token)


@contextlib.contextmanager
def request_context(
    *,
    user_id: str | int | None = None,
    anonymous_id: str | int | None = None,
    traits: Mapping[str, Any] | None = None,
    consent: Mapping[str, bool] | None = None,
) -> Iterator[RequestContext]:
    """Make the calls inside the block default to this person and their consent.

    ``client.identify``, ``track`` and ``page`` use the context's ``user_id``,
    ``anonymous_id``, ``traits`` and ``consent`` where the call passes none (a call's own
    traits and consent categories win key by key); a call naming another ``user_id`` or
    ``anonymous_id`` takes nothing from it. Works in threads and asyncio tasks alike (a
    ``contextvars.ContextVar``); nested inside another context, what this one leaves out
    comes from the outer one. ``subscribe`` and ``unsubscribe`` never read it: a
    subscription names its address explicitly.

    Args:
        user_id: Your id for the person (str or int).
        anonymous_id: The browser's or device's anonymous id.
        traits: Profile traits for every call inside, e.g. ``{"email": ...}``.
        consent: Consent by category, e.g. ``{"marketing": True}``.

    Yields:
        The context now current.

    Raises:
        ValidationError: A value breaks a rule (checked here, once).
    """
    context = make_context(
        user_id=user_id, anonymous_id=anonymous_id, traits=traits, consent=consent
    )
    outer = CURRENT.get(None)
    if outer is not None:
        context = outer.under(context)
    with using(context):
        yield context


def current_context() -> RequestContext | None:
    """Return the request context the calls made here would use, or None."""
    return CURRENT.get(None)
