"""The blueprint: which calls reach Klaviyo, under which metric, with which properties.

``default_blueprint()`` is the documented mapping: ``page`` -> ``page_view``,
``Product Viewed`` -> ``product_viewed``, ``Order Completed`` -> ``purchase``; every other
event is dropped until ``enable``\\ d. Blueprints are immutable values, so one can be shared
between threads and clients; ``enable``/``disable`` return a new one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal

import attrs

from ._errors import ValidationError
from ._json import JSON
from ._messages import Message
from ._models import Event, Profile
from ._profile import profile_from

__all__ = ["Blueprint", "Decision", "Rule", "default_blueprint", "metric_name"]

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_NOT_FOUND = object()


def metric_name(event: str) -> str:
    """Return the snake_case metric name for an event name (``Signed Up`` -> ``signed_up``)."""
    return re.sub(r"[^0-9a-z]+", "_", event.lower()).strip("_") or event


@attrs.frozen
class Rule:
    """How one source event (or ``page``) becomes a Klaviyo event.

    Attributes:
        metric: The Klaviyo metric name.
        enabled: False drops the event with a reason saying so.
        forward_all: Send every property of the call as it is.
        fields: Target property -> dotted source paths; the first one present wins.
        value: Dotted path of the number that feeds Klaviyo's ``value`` (revenue attribution).
        value_currency: Dotted path of the ISO 4217 code that feeds ``value_currency``.
    """

    metric: str
    enabled: bool = True
    forward_all: bool = False
    fields: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    value: str | None = None
    value_currency: str | None = None


@attrs.frozen
class Decision:
    """What the blueprint decided for one call: Klaviyo objects to send, or a drop reason."""

    objects: tuple[Event | Profile, ...]
    drop_reason: str | None = None
    rule: str | None = None


def _lookup(message: Message, path: str) -> object:
    """Read a dotted path (``properties.url``, ``context.page.url``, ``name``) from a message."""
    head, _, rest = path.partition(".")
    current: object = getattr(message, head, _NOT_FOUND)
    for part in rest.split(".") if rest else ():
        if not isinstance(current, Mapping):
            return _NOT_FOUND
        current = current.get(part, _NOT_FOUND)
    return current


def _number(message: Message, path: str) -> int | float | Decimal | None:
    found = _lookup(message, path)
    if found is _NOT_FOUND or found is None:
        return None
    if isinstance(found, bool) or not isinstance(found, (int, float, Decimal)):
        raise ValidationError(
            f"{path}: must be a number to feed Klaviyo's value (revenue), got {found!r}"
        )
    return found


def _currency(message: Message, path: str) -> str | None:
    found = _lookup(message, path)
    if found is _NOT_FOUND or found is None:
        return None
    if not isinstance(found, str) or not _CURRENCY.match(found):
        raise ValidationError(
            f"{path}: must be an ISO 4217 currency code in capitals such as 'USD', got {found!r}"
        )
    return found


@attrs.frozen
class Blueprint:
    """Rules that map identify, track and page calls onto Klaviyo profiles and events.

    Attributes:
        rules: Source event name -> rule, for ``track`` calls.
        page: The rule for ``page`` calls.
    """

    rules: Mapping[str, Rule] = attrs.field(factory=dict)
    page: Rule = attrs.field(factory=lambda: Rule(metric="page_view", forward_all=True))

    def enable(self, name: str, *, metric: str | None = None) -> Blueprint:
        """Return a blueprint that forwards ``name`` (all its properties, unless a rule says).

        Args:
            name: The source event name, as passed to ``track``.
            metric: The Klaviyo metric name; default: ``name`` in snake_case.
        """
        existing = self.rules.get(name)
        if existing is None:
            rule = Rule(metric=metric or metric_name(name), forward_all=True)
        else:
            rule = attrs.evolve(existing, enabled=True, metric=metric or existing.metric)
        return attrs.evolve(self, rules={**self.rules, name: rule})

    def disable(self, name: str) -> Blueprint:
        """Return a blueprint that drops ``name``."""
        existing = self.rules.get(name) or Rule(metric=metric_name(name))
        return attrs.evolve(self, rules={**self.rules, name: attrs.evolve(existing, enabled=False)})

    def decide(self, message: Message) -> Decision:
        """Map one call onto the Klaviyo objects to send, or say why it is dropped."""
        if message.kind == "identify":
            return Decision((profile_from(message, full=True),), rule="identify")
        if message.kind == "page":
            rule, rule_name = self.page, "page"
        else:
            event = message.event or ""
            found = self.rules.get(event)
            if found is None:
                return Decision(
                    (),
                    f"event {event!r} has no rule in the blueprint (custom events are dropped "
                    f"by default); forward it with blueprint=default_blueprint().enable({event!r})",
                )
            rule, rule_name = found, event
        if not rule.enabled:
            return Decision((), f"{rule_name!r} is disabled in the blueprint", rule=rule_name)
        return Decision((self._event(rule, message),), rule=rule_name)

    @staticmethod
    def _event(rule: Rule, message: Message) -> Event:
        if rule.forward_all:
            properties: dict[str, JSON] = dict(message.properties)
        else:
            properties = {}
        for target, sources in rule.fields.items():
            for source in sources:
                found = _lookup(message, source)
                if found is not _NOT_FOUND and found is not None:
                    properties[target] = found  # type: ignore[assignment]
                    break
        properties["consent"] = dict(message.consent)
        return Event(
            metric=rule.metric,
            profile=profile_from(message, full=bool(message.traits)),
            properties=properties,
            time=message.timestamp,
            unique_id=message.message_id,
            value=_number(message, rule.value) if rule.value else None,
            value_currency=_currency(message, rule.value_currency) if rule.value_currency else None,
        )


def _from_properties(*names: str) -> dict[str, tuple[str, ...]]:
    return {name: (f"properties.{name}",) for name in names}


def default_blueprint() -> Blueprint:
    """Return the documented default mapping (see docs/mapping.md)."""
    return Blueprint(
        rules={
            "Product Viewed": Rule(
                metric="product_viewed", fields=_from_properties("product_id", "name", "price")
            ),
            "Order Completed": Rule(
                metric="purchase",
                fields=_from_properties("order_id", "revenue", "currency"),
                value="properties.revenue",
                value_currency="properties.currency",
            ),
        },
        page=Rule(
            metric="page_view",
            fields={
                "url": ("properties.url", "context.page.url"),
                "title": ("properties.title", "context.page.title"),
                "name": ("name",),
            },
        ),
    )
