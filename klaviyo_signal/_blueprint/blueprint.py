"""The blueprint: which calls reach Klaviyo, under which metric, with which properties.

``default_blueprint()`` is the documented mapping: ``page`` -> ``page_view``,
``Product Viewed`` -> ``product_viewed``, ``Order Completed`` -> ``purchase``; every other
event is dropped until ``enable``\\ d. ``default_blueprint("klaviyo_ecommerce")`` uses the
metric names Klaviyo's prebuilt flows expect. Both are blueprint files under
``blueprints/``, loaded like a user's own. Blueprints are immutable values, so one can be
shared between threads and clients; ``enable``/``disable`` return a new one. A Client
compiles its blueprint once (``_blueprint/compiled``), as ``re.compile`` does a pattern.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .._errors import ValidationError
from .._klaviyo.json import JSON
from .file import dump, parse, read
from .rules import (
    CatchAll,
    IdentifyRule,
    Mapper,
    ProfileMap,
    Rule,
    check_metric,
    metric_name,
)
from .variants import variant_data

__all__ = [
    "Blueprint",
    "Rule",
    "blueprint_for_variant",
    "default_blueprint",
    "metric_name",
]


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
