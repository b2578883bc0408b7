"""The blueprint: which calls reach Klaviyo, under which metric, with which properties.

``default_blueprint()`` is the documented mapping: ``page`` -> ``page_view``,
``Product Viewed`` -> ``product_viewed``, ``Order Completed`` -> ``purchase``; every other
event is dropped until ``enable``\\ d. ``default_blueprint("klaviyo_ecommerce")`` uses the
metric names Klaviyo's prebuilt flows expect. Both are blueprint files under
``blueprints/``, loaded like a user's own. Blueprints are immutable values, so one can be
shared between threads and clients; ``enable``/``disable`` return a new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ._blueprint_file import dump, parse, read
from ._consent import consent_drop_reason
from ._errors import ValidationError
from ._events import build_events
from ._json import JSON
from ._messages import Message
from ._models import KlaviyoObject
from ._paths import message_view
from ._profile import profile_from
from ._rules import (
    CatchAll,
    IdentifyRule,
    Mapper,
    ProfileMap,
    Rule,
    SubscribeRule,
    check_metric,
    metric_name,
)
from ._subscriptions import Subscription, implied_subscription
from ._variants import variant_data

__all__ = [
    "Blueprint",
    "Decision",
    "Rule",
    "blueprint_for_variant",
    "default_blueprint",
    "metric_name",
]


@attrs.frozen
class Decision:
    """What the blueprint decided for one call: Klaviyo objects to send, or a drop reason.

    The objects go in order: an identify's profile import before the subscription it
    implies, so the subscription lands on the updated profile.
    """

    objects: tuple[KlaviyoObject, ...]
    drop_reason: str | None = None
    rule: str | None = None
    """Which rule decided: an event name, ``"page"``, ``"identify"`` or ``"catch_all"``."""


def _subscriptions(rule: SubscribeRule | None, message: Message) -> tuple[Subscription, ...]:
    """Return the subscription an identify asks for through the rule's trait, if any."""
    if rule is None or message.traits.get(rule.trait) is not True:
        return ()
    # A trait is no consent when the call itself says marketing is denied.
    if consent_drop_reason(message.consent, require_consent=False) is not None:
        return ()
    identity = message.identity
    sub = implied_subscription(
        email=identity.email,
        phone_number=identity.phone_number,
        channels=rule.channels,
        list_id=rule.list_id,
        custom_source=rule.custom_source,
        message_id=message.message_id,
    )
    return () if sub is None else (sub,)


def _no_rule(event: str) -> str:
    return (
        f"event {event!r} has no rule in the blueprint (custom events are dropped "
        f"by default); forward it with blueprint=default_blueprint().enable({event!r})"
    )


@attrs.frozen
class Blueprint:
    """Rules that map identify, track and page calls onto Klaviyo profiles and events.

    Attributes:
        rules: Source event name -> rule, for ``track`` calls.
        page: The rule for ``page`` calls.
        identify: Whether ``identify`` calls update the profile, and whether a trait turns
            one into a list subscription.
        catch_all: What happens to ``track`` events with no rule.
        profile: How traits become the profile's attributes, location and properties.
        mapper: Computes the properties of every event whose rule has no mapper of its own;
            returning None drops the call.
    """

    rules: Mapping[str, Rule] = attrs.field(factory=dict)
    page: Rule = attrs.field(factory=lambda: Rule(metric="page_view"))
    identify: IdentifyRule = attrs.field(factory=IdentifyRule)
    catch_all: CatchAll = attrs.field(factory=CatchAll)
    profile: ProfileMap = attrs.field(factory=ProfileMap)
    mapper: Mapper | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "blueprint") -> Blueprint:
        """Build a blueprint from file data (the format ``to_dict`` writes).

        Args:
            data: The parsed JSON or TOML.
            source: Names the data in error messages (a file name).

        Raises:
            BlueprintError: Listing every problem, each with its path, unknown keys included.
        """
        return cls(**parse(data, source))

    @classmethod
    def from_file(cls, path: str | Path) -> Blueprint:
        """Load a ``.json`` or ``.toml`` blueprint file (TOML needs Python 3.11 or tomli).

        Raises:
            BlueprintError: The file cannot be read, or listing every problem in it.
        """
        return cls.from_dict(read(path), source=str(path))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        """Return the blueprint as file data; ``from_dict`` reads it back to an equal one.

        Raises:
            ValidationError: A mapper is a lambda or nested function, which no file can name.
        """
        return dump(self)

    def enable(
        self, name: str, *, metric: str | None = None, mapper: Mapper | None = None
    ) -> Blueprint:
        """Return a blueprint that forwards ``name`` (all its properties, unless a rule says).

        Args:
            name: The source event name, as passed to ``track``.
            metric: The Klaviyo metric name; default: the rule's, or ``name`` in snake_case.
            mapper: A function computing the event's properties (None from it drops).
        """
        if not isinstance(name, str) or not name.strip():
            raise ValidationError(f"enable: name must be a non-empty event name, got {name!r}")
        if metric is not None and (problem := check_metric(metric)):
            raise ValidationError(f"enable: metric: {problem}")
        existing = self.rules.get(name)
        if existing is None:
            rule = Rule(metric=metric or metric_name(name), mapper=mapper)
        else:
            rule = attrs.evolve(
                existing,
                enabled=True,
                metric=metric or existing.metric,
                mapper=mapper or existing.mapper,
            )
        return attrs.evolve(self, rules={**self.rules, name: rule})

    def disable(self, name: str) -> Blueprint:
        """Return a blueprint that drops ``name``, even when the catch-all forwards."""
        if not isinstance(name, str) or not name.strip():
            raise ValidationError(f"disable: name must be a non-empty event name, got {name!r}")
        existing = self.rules.get(name) or Rule(metric=metric_name(name))
        return attrs.evolve(self, rules={**self.rules, name: attrs.evolve(existing, enabled=False)})

    def decide(self, message: Message) -> Decision:
        """Map one call onto the Klaviyo objects to send, or say why it is dropped."""
        if message.kind == "identify":
            if not self.identify.enabled:
                return Decision((), "'identify' is disabled in the blueprint", rule="identify")
            profile = profile_from(message, full=True, mapping=self.profile)
            subscriptions = _subscriptions(self.identify.subscribe, message)
            return Decision((profile, *subscriptions), rule="identify")
        rule, rule_name = self._rule_for(message)
        if rule is None:
            return Decision((), _no_rule(message.event or ""))
        if not rule.enabled:
            return Decision((), f"{rule_name!r} is disabled in the blueprint", rule=rule_name)
        view = message_view(message)
        profile = profile_from(message, full=bool(message.traits), mapping=self.profile, view=view)
        events = build_events(rule, message, profile, self.mapper, view=view)
        if events is None:
            return Decision(
                (), f"the mapper for {rule_name!r} dropped the call (it returned None)", rule_name
            )
        return Decision(events, rule=rule_name)

    def _rule_for(self, message: Message) -> tuple[Rule | None, str]:
        if message.kind == "page":
            return self.page, "page"
        event = message.event or ""
        found = self.rules.get(event)
        if found is not None:
            return found, event
        if self.catch_all.action == "drop":
            return None, event
        metric = metric_name(event) if self.catch_all.metric_style == "snake_case" else event
        return Rule(metric=metric), "catch_all"


def blueprint_for_variant(name: str) -> Blueprint:
    """Return a built-in variant: ``"default"`` or ``"klaviyo_ecommerce"``.

    Raises:
        ConfigurationError: ``name`` is not a known variant; the message lists them.
    """
    return Blueprint.from_dict(variant_data(name), source=f"built-in variant {name!r}")  # type: ignore[arg-type]


def default_blueprint(variant: str = "default") -> Blueprint:
    """Return a built-in mapping; ``variant="klaviyo_ecommerce"`` for Klaviyo's metric names.

    See docs/blueprints.md for both, side by side.

    Raises:
        ConfigurationError: ``variant`` is not a known variant; the message lists them.
    """
    return blueprint_for_variant(variant)
