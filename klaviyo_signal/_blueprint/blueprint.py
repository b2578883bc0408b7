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

from .._calls.consent import consent_drop_reason
from .._calls.message import Message, plain_name
from .._calls.subscription import Subscription, implied_subscription
from .._errors import ValidationError
from .._klaviyo.json import JSON, MAX_EVENT_PROPERTIES
from .._klaviyo.models import KlaviyoObject
from .events import Pending, build_events, pending, simple_extra
from .file import dump, parse, read
from .paths import message_view
from .profile import bare, identifier_traits_are_bare, profile_from
from .quick import QuickPlan, quick_plan
from .reads import ALL, Reads, context_reads, profile_paths, rule_paths, rule_reads
from .rules import (
    CatchAll,
    IdentifyRule,
    Mapper,
    ProfileMap,
    Rule,
    SubscribeRule,
    check_metric,
    metric_name,
)
from .variants import variant_data

_PLANS_CACHE = 1024
_READS_ALL = Reads()

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


@attrs.frozen
class _CallPlan:
    """What calls of one kind and event name need from the caller's thread."""

    rule: Rule | None
    rule_name: str
    reads: Reads
    """What of the call's properties and context the mapping reads."""
    timestamp_in_view: bool
    """Whether a path reads ``timestamp`` (as an ISO string) from the call."""
    extra: int | None = None
    """For a simple rule (see ``_blueprint.events.simple_extra``), the properties it adds."""
    quick: QuickPlan | None = None
    """For a simple track rule the caller's fast lane can take (``quick.py``), its plan."""


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
    # (kind, event name) -> what such a call needs; see ``_plan``. Not part of the value.
    _plans: dict[tuple[str, str], _CallPlan] = attrs.field(
        factory=dict, init=False, eq=False, repr=False, hash=False
    )

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
        plan = self._plan(message.kind, message.event)
        rule, rule_name = plan.rule, plan.rule_name
        if rule is None:
            return Decision((), _no_rule(message.event or ""))
        if not rule.enabled:
            return Decision((), f"{rule_name!r} is disabled in the blueprint", rule=rule_name)
        view = message_view(message, timestamp=plan.timestamp_in_view)
        profile = profile_from(message, full=bool(message.traits), mapping=self.profile, view=view)
        events = build_events(rule, message, profile, self.mapper, view=view)
        if events is None:
            return Decision(
                (), f"the mapper for {rule_name!r} dropped the call (it returned None)", rule_name
            )
        return Decision(events, rule=rule_name)

    def prepare(self, message: Message) -> Decision | Pending:
        """Decide now, or check only and return the ``Pending`` event to build later.

        Background mode calls this on the caller's thread and leaves building the common,
        simple calls' events to the worker (``_delivery.jobs.encode_queued``): a rule without
        mapper, items or source paths, and an event profile that is just the identity.
        Every check ``decide`` would make still happens here, so bad input fails on the
        caller's line all the same. Other calls are decided here in full.

        Raises:
            ValidationError: The call's data breaks a rule (see ``decide``).
        """
        if message.kind == "identify":
            return self.decide(message)
        plan = self._plan(message.kind, message.event)
        rule = plan.rule
        if (
            rule is None
            or not rule.enabled
            or plan.extra is None
            or len(message.properties) + plan.extra > MAX_EVENT_PROPERTIES
            or not bare(message, self.profile)
        ):
            return self.decide(message)
        key = (message.kind, message.event or "")
        view = message_view(message, timestamp=plan.timestamp_in_view)
        return pending(key, rule, message, view)

    def rule_for(self, key: tuple[str, str]) -> Rule:
        """Return the rule of a ``Pending`` call's key (the worker builds its event by it).

        Raises:
            KeyError: No enabled rule has that key (``prepare`` never makes such a call).
        """
        rule = self._plan(*key).rule
        if rule is None:
            raise KeyError(key)
        return rule

    def quick(self, event: object) -> QuickPlan | None:
        """Return the fast lane's plan for ``track(event)`` calls, or None (``quick.py``)."""
        if not plain_name(event):
            return None
        return self._plan("track", event).quick

    def reads(self, kind: str, event: object) -> Reads:
        """Return what of a call's properties and context its mapping reads.

        The caller's thread cleans only these (see ``_blueprint/reads``); a dropped call reads no
        properties.
        """
        if kind == "track" and not plain_name(event):
            return _READS_ALL  # build_message refuses the name, with the reason
        return self._plan(kind, event).reads  # type: ignore[arg-type]

    def _plan(self, kind: str, event: str | None) -> _CallPlan:
        """What a call of this kind and name needs, worked out once per event name."""
        key = (kind, event if kind == "track" and event is not None else "")
        try:
            return self._plans[key]
        except KeyError:
            pass
        rule, name = (None, "identify") if kind == "identify" else self._rule_named(kind, key[1])
        if kind == "identify":
            reads = Reads(ALL, context_reads(profile_paths(self.profile), None))
            plan = _CallPlan(rule, name, reads, timestamp_in_view=True)
        elif rule is None or not rule.enabled:
            plan = _CallPlan(rule, name, Reads((), context_reads((), None)), False)
        else:
            paths = list(rule_paths(rule, self.profile))
            reads = Reads(
                rule_reads(rule, self.mapper, self.profile),
                context_reads(paths, rule.mapper or self.mapper),
            )
            if rule.time == "timestamp":
                paths.remove("timestamp")  # the default time is read without the view
            extra = simple_extra(rule, self.mapper)
            quick = None
            if extra is not None and kind == "track":
                traits_bare = identifier_traits_are_bare(self.profile)
                quick = quick_plan(key, rule, reads, extra, traits_only=traits_bare)
            plan = _CallPlan(
                rule,
                name,
                reads,
                timestamp_in_view=any(p.partition(".")[0] == "timestamp" for p in paths),
                extra=extra,
                quick=quick,
            )
        if len(self._plans) >= _PLANS_CACHE:
            self._plans.clear()  # event names are the caller's: keep the cache bounded
        self._plans[key] = plan
        return plan

    def _rule_named(self, kind: str, event: str) -> tuple[Rule | None, str]:
        if kind == "page":
            return self.page, "page"
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
