"""A blueprint compiled for one Client: each call's plan, worked out once per event name.

``compile_blueprint`` is to a ``Blueprint`` what ``re.compile`` is to a pattern: the
Blueprint stays a plain, immutable value (compare, serialise, share it), and the compiled
form keeps the per-event-name plans a busy Client reuses on every call (what the call's
mapping reads, whether its rule is simple, the fast lane's plan) in a bounded cache.
``decide`` maps a call in full; ``prepare`` checks a simple one and leaves building its
event to the worker.
"""

from __future__ import annotations

import attrs

from .._calls.consent import consent_drop_reason
from .._calls.message import Message, plain_name
from .._calls.subscription import implied_subscription
from .._klaviyo.limits import MAX_EVENT_PROPERTIES
from .._klaviyo.models import KlaviyoObject, Subscription
from .blueprint import Blueprint
from .events import build_events, pack, simple_room
from .paths import message_view
from .profile import bare, identifier_traits_are_bare, profile_from
from .quick import QuickPlan, quick_plan
from .reads import ALL, Reads, context_reads, profile_paths, rule_paths, rule_reads
from .record import Packed
from .rules import Rule, SubscribeRule, metric_name

__all__ = ["CompiledBlueprint", "Decision", "compile_blueprint"]

_PLANS_CACHE = 1024
_READS_ALL = Reads()


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
class _CallPlan:
    """What calls of one kind and event name need from the caller's thread."""

    rule: Rule | None
    rule_name: str
    reads: Reads
    """What of the call's properties and context the mapping reads."""
    timestamp_in_view: bool
    """Whether a path reads ``timestamp`` (as an ISO string) from the call."""
    room: int | None = None
    """For a simple rule (see ``_blueprint.events.simple_room``), how many of the call's
    properties its event has room for."""
    quick: QuickPlan | None = None
    """For a simple track rule the caller's fast lane can take (``quick.py``), its plan."""


class CompiledBlueprint:
    """A blueprint with its call plans cached: what a Client maps every call with."""

    __slots__ = ("_blueprint", "_plans", "_quick", "max_properties")

    def __init__(self, blueprint: Blueprint, max_properties: int) -> None:
        self._blueprint = blueprint
        self.max_properties = max_properties
        """The most properties an event may carry: the revision's limit."""
        # (kind, event name) -> what such a call needs; see ``_plan``.
        self._plans: dict[tuple[str, str], _CallPlan] = {}
        # Plain track event names -> the lane's plan: one dict lookup on the caller's hot
        # path (only str keys: a str subclass never finds a str's entry unchecked).
        self._quick: dict[str, QuickPlan | None] = {}

    @property
    def blueprint(self) -> Blueprint:
        """The blueprint this was compiled from."""
        return self._blueprint

    def decide(self, message: Message) -> Decision:
        """Map one call onto the Klaviyo objects to send, or say why it is dropped."""
        if message.kind == "identify":
            if not self._blueprint.identify.enabled:
                return Decision((), "'identify' is disabled in the blueprint", rule="identify")
            profile = profile_from(message, full=True, mapping=self._blueprint.profile)
            subscriptions = _subscriptions(self._blueprint.identify.subscribe, message)
            return Decision((profile, *subscriptions), rule="identify")
        plan = self._plan(message.kind, message.event)
        rule, rule_name = plan.rule, plan.rule_name
        if rule is None:
            return Decision((), _no_rule(message.event or ""))
        if not rule.enabled:
            return Decision((), f"{rule_name!r} is disabled in the blueprint", rule=rule_name)
        view = message_view(message, timestamp=plan.timestamp_in_view)
        profile = profile_from(
            message, full=bool(message.traits), mapping=self._blueprint.profile, view=view
        )
        events = build_events(
            rule, message, profile, self._blueprint.mapper, view=view, most=self.max_properties
        )
        if events is None:
            return Decision(
                (), f"the mapper for {rule_name!r} dropped the call (it returned None)", rule_name
            )
        return Decision(events, rule=rule_name)

    def prepare(self, message: Message) -> Decision | Packed:
        """Decide now, or check only and return the call's queue record to build later.

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
            or plan.room is None
            or len(message.properties) > plan.room
            or not bare(message, self._blueprint.profile)
        ):
            return self.decide(message)
        key = (message.kind, message.event or "")
        view = message_view(message, timestamp=plan.timestamp_in_view)
        return pack(key, rule, message, view)

    def rule_for(self, key: tuple[str, str]) -> Rule:
        """Return the rule of a queued record's key (the worker builds its event by it).

        Raises:
            KeyError: No enabled rule has that key (``prepare`` never makes such a call).
        """
        rule = self._plan(*key).rule
        if rule is None:
            raise KeyError(key)
        return rule

    def quick(self, event: object) -> QuickPlan | None:
        """Return the fast lane's plan for ``track(event)`` calls, or None (``quick.py``)."""
        if type(event) is str:
            try:
                return self._quick[event]
            except KeyError:
                pass
        if not plain_name(event):
            return None
        plan = self._plan("track", event).quick
        if len(self._quick) >= _PLANS_CACHE:
            self._quick.clear()  # event names are the caller's: keep the cache bounded
        self._quick[event] = plan
        return plan

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
            reads = Reads(ALL, context_reads(profile_paths(self._blueprint.profile), None))
            plan = _CallPlan(rule, name, reads, timestamp_in_view=True)
        elif rule is None or not rule.enabled:
            plan = _CallPlan(rule, name, Reads((), context_reads((), None)), False)
        else:
            paths = list(rule_paths(rule, self._blueprint.profile))
            reads = Reads(
                rule_reads(rule, self._blueprint.mapper, self._blueprint.profile),
                context_reads(paths, rule.mapper or self._blueprint.mapper),
            )
            if rule.time == "timestamp":
                paths.remove("timestamp")  # the default time is read without the view
            room = simple_room(rule, self._blueprint.mapper, self.max_properties)
            quick = None
            if room is not None and kind == "track":
                traits_bare = identifier_traits_are_bare(self._blueprint.profile)
                quick = quick_plan(key, rule, reads, room, traits_only=traits_bare)
            plan = _CallPlan(
                rule,
                name,
                reads,
                timestamp_in_view=any(p.partition(".")[0] == "timestamp" for p in paths),
                room=room,
                quick=quick,
            )
        if len(self._plans) >= _PLANS_CACHE:
            self._plans.clear()  # event names are the caller's: keep the cache bounded
        self._plans[key] = plan
        return plan

    def _rule_named(self, kind: str, event: str) -> tuple[Rule | None, str]:
        if kind == "page":
            return self._blueprint.page, "page"
        found = self._blueprint.rules.get(event)
        if found is not None:
            return found, event
        if self._blueprint.catch_all.action == "drop":
            return None, event
        metric = (
            metric_name(event) if self._blueprint.catch_all.metric_style == "snake_case" else event
        )
        return Rule(metric=metric), "catch_all"


def compile_blueprint(
    blueprint: Blueprint, *, max_properties: int = MAX_EVENT_PROPERTIES
) -> CompiledBlueprint:
    """Return ``blueprint`` compiled: its plans are worked out on first use, then kept.

    Args:
        blueprint: The blueprint.
        max_properties: The most properties an event may carry (a Client passes its
            revision's); by default the limit every supported revision accepts.
    """
    return CompiledBlueprint(blueprint, max_properties)
